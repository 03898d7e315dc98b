"""Pipeline stages (sdg, prep, train, eval, export) behind one contract: `eft stage NAME --spec --workdir`."""
