package daemon_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// collector is a real OTLP/HTTP endpoint on loopback that keeps the spans
// it is sent.
type collector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (c *collector) find(name string) *tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.spans {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, a job's attempt is a span exported
// to the collector, and the traceparent the app put in its INSERT makes it
// a child of the app's span, in the app's trace.
func TestJobSpanContinuesTheInsertsTrace(t *testing.T) {
	t.Parallel()
	c := &collector{}
	srv := httptest.NewServer(c)
	defer srv.Close()
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL})
	ws := errandtest.NewWorkspace(t, pool, "traced")

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	var id int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, traceparent)
		VALUES ($1, 'ping', '{}', $2) RETURNING id`, ws, "00-"+traceID+"-"+parentID+"-01").Scan(&id); err != nil {
		t.Fatal(err)
	}
	var shown string
	if err := pool.QueryRow(context.Background(), `SELECT traceparent FROM errand.jobs WHERE id = $1`, id).Scan(&shown); err != nil || !strings.Contains(shown, traceID) {
		t.Errorf("errand.jobs.traceparent: %q, %v", shown, err)
	}
	errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")

	// Spans leave in batches (every second here): wait for it, a bound, not
	// a measurement.
	deadline := time.Now().Add(30 * time.Second)
	var span *tracepb.Span
	for span == nil {
		if span = c.find("river.work/ping"); span == nil {
			if time.Now().After(deadline) {
				t.Fatal("no river.work/ping span reached the collector within 30 s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if got := hex.EncodeToString(span.TraceId); got != traceID {
		t.Errorf("the job's span is in trace %s, want the INSERT's %s", got, traceID)
	}
	if got := hex.EncodeToString(span.ParentSpanId); got != parentID {
		t.Errorf("the job's span has parent %s, want the INSERT's span %s", got, parentID)
	}
}

// A job without a traceparent is traced too, in a trace of its own.
func TestJobSpanWithoutATraceparent(t *testing.T) {
	t.Parallel()
	c := &collector{}
	srv := httptest.NewServer(c)
	defer srv.Close()
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL})
	ws := errandtest.NewWorkspace(t, pool, "untraced")
	errandtest.WaitJob(t, pool, errandtest.Enqueue(t, pool, ws, "ping", `{}`), 30*time.Second, "completed")
	deadline := time.Now().Add(30 * time.Second)
	for c.find("river.work/ping") == nil {
		if time.Now().After(deadline) {
			t.Fatal("no river.work/ping span within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := c.find("river.work/ping"); len(s.ParentSpanId) != 0 {
		t.Errorf("a job enqueued without a traceparent has parent %x", s.ParentSpanId)
	}
}

func TestTracingRefusesABadEndpoint(t *testing.T) {
	for _, v := range []string{"otel-collector:4318", "grpc://collector:4317", "http://"} {
		var out bytes.Buffer
		err := errand.Main(context.Background(), []string{"run"},
			errandtest.Env(map[string]string{"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", "OTEL_EXPORTER_OTLP_ENDPOINT": v}), &out, &out)
		if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_ENDPOINT") {
			t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT=%q: %v, want an error naming it", v, err)
		}
	}
}
