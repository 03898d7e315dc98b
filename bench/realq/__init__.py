"""Real-question benchmark: BEIR datasets built from Debian documentation packages whose authors wrote FAQs.

For each set the queries are the FAQ's questions, the relevant passage of each is its answer, the corpus is the
answers plus chunks of the rest of the chosen documentation, and `docs/` holds that documentation with the
questions removed (the only thing the pipeline gets). `build.py` builds the sets, `leakage.py` checks them,
`sources.py` knows each package's FAQ format, `../realq_run.py` runs the pipeline on them and scores it.
"""
