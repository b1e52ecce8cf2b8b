-- A rendered PDF is already compressed (gofpdf deflates its streams and the
-- embedded font): PostgreSQL's own compression of it costs CPU at every
-- insert and saves nearly nothing. EXTERNAL keeps it out of line, as
-- before, without trying. (BenchmarkRenderJobs: about +8% invoices/s.)
ALTER TABLE errand.invoice_documents ALTER COLUMN pdf SET STORAGE EXTERNAL;
