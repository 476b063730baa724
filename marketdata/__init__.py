"""Bar loading, in one home: file formats and validation (``bars``), the ParquetDataCatalog
(``catalog``) and importing files into it (``ingest``). Backtests, replay, training and the
benchmarks all read bars through here."""
