"""Reading documents (txt, md, html) into structured sections and chunking them to a token budget."""
