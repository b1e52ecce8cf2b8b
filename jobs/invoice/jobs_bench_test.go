package invoice_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
)

// BenchmarkRenderJobs is the whole job, not only the PDF: b.N invoice.render
// jobs of twenty-line invoices committed at once and worked by one daemon
// with the documents queue's default 8 workers, each reading its invoice,
// rendering, storing the version with its sha256 and completing in one
// transaction. Setup is not timed; the target is issue 11's 200 per second.
//
//	go test -run '^$' -bench RenderJobs -benchtime 1000x ./jobs/invoice/
func BenchmarkRenderJobs(b *testing.B) {
	ctx := context.Background()
	url, pool := errandtest.MigratedDB(b)
	ws := errandtest.NewWorkspace(b, pool, "bench")
	env := map[string]string{"ERRAND_LOG_LEVEL": "warn"}
	if q := os.Getenv("ERRAND_QUEUES"); q != "" {
		env["ERRAND_QUEUES"] = q // to try other worker counts
	}
	errandtest.StartDaemon(b, url, env)
	if _, err := pool.Exec(ctx, `INSERT INTO errand.invoices (workspace_id, number, customer_name, customer_address, currency)
		SELECT $1, 'B-' || g, 'Müller & Søn GmbH', E'Hauptstraße 1\n10115 Berlin', 'EUR' FROM generate_series(1, $2) AS g`, ws, b.N); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO errand.invoice_items (invoice_id, workspace_id, description, quantity, unit_amount, tax_rate)
		SELECT inv.id, $1, 'Consulting for Ελληνική Εταιρεία, item ' || i, 1.5, 1000 + i, (ARRAY[20, 7, 0])[1 + i % 3]
		FROM errand.invoices inv, generate_series(1, 20) AS i WHERE inv.workspace_id = $1`, ws); err != nil {
		b.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT $1, 'invoice.render', jsonb_build_object('invoice_id', id) FROM errand.invoices WHERE workspace_id = $1`, ws); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := tx.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var done, failed int
		if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed')
			FROM errand.jobs WHERE workspace_id = $1 AND kind = 'invoice.render'`, ws).Scan(&done, &failed); err != nil {
			b.Fatal(err)
		}
		if failed > 0 {
			b.Fatalf("%d renders failed", failed)
		}
		if done == b.N {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d renders completed after 10 minutes", done, b.N)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	// Where the time went, by the database's timestamps: one attempt from
	// its start to its completion, and the wait in the queue.
	var diag string
	if err := pool.QueryRow(ctx, `SELECT format('attempt %s ms, queued %s ms (averages)',
		round(avg(extract(epoch FROM finalized_at - attempted_at)) * 1000, 2),
		round(avg(extract(epoch FROM attempted_at - created_at)) * 1000, 2))
		FROM errand.river_job WHERE kind = 'invoice.render'`).Scan(&diag); err != nil {
		b.Fatal(err)
	}
	b.Log(diag)
	var avg float64
	if err := pool.QueryRow(ctx, `SELECT avg(size_bytes) FROM errand.invoice_documents`).Scan(&avg); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(avg, "pdf_bytes")
	perSecond := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(perSecond, "invoices/s")
	b.ReportMetric(perSecond/200, "x_target")
	var stored int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.invoice_documents WHERE workspace_id = $1`, ws).Scan(&stored); err != nil || stored != b.N {
		b.Fatalf("%d documents stored, want %d (%v)", stored, b.N, err)
	}
}
