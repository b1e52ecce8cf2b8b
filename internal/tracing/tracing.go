// Package tracing is errand's optional OpenTelemetry tracing: with
// OTEL_EXPORTER_OTLP_ENDPOINT set, every job attempt is a span (River's
// otelriver middleware, "river.work/<kind>"), exported over OTLP/HTTP. A
// W3C traceparent the app put in its INSERT (the contract's traceparent
// column, kept in the job's metadata) makes the span a child of the app's
// span, in the app's trace, with a link to it as otelriver adds.
package tracing

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/riverqueue/rivercontrib/otelriver"
	"github.com/tidwall/gjson"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Tracing is a tracer provider exporting to one OTLP endpoint and the River
// middleware that uses it.
type Tracing struct {
	provider   *sdktrace.TracerProvider
	middleware []rivertype.Middleware
}

// Config is what tracing needs from errand's configuration.
type Config struct {
	// Endpoint is OTEL_EXPORTER_OTLP_ENDPOINT, the collector's base URL
	// (http://collector:4318); spans go to <Endpoint>/v1/traces.
	Endpoint string
	// ServiceName is OTEL_SERVICE_NAME (default "errand").
	ServiceName string
	// Replica is the replica's id, as service.instance.id.
	Replica string
	// BatchTimeout is how long spans wait to be exported together (the
	// SDK's default 5 s when zero).
	BatchTimeout time.Duration
}

// New starts exporting; nil when cfg.Endpoint is empty (tracing off).
func New(ctx context.Context, cfg Config) (*Tracing, error) {
	if cfg.Endpoint == "" {
		return nil, nil
	}
	exporter, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(strings.TrimRight(cfg.Endpoint, "/")+"/v1/traces"))
	if err != nil {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
	}
	name := cfg.ServiceName
	if name == "" {
		name = "errand"
	}
	var batch []sdktrace.BatchSpanProcessorOption
	if cfg.BatchTimeout > 0 {
		batch = append(batch, sdktrace.WithBatchTimeout(cfg.BatchTimeout))
	}
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exporter, batch...),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(name), semconv.ServiceInstanceID(cfg.Replica))),
	)
	return &Tracing{
		provider: provider,
		middleware: []rivertype.Middleware{
			&parentFromMetadata{},
			otelriver.NewMiddleware(&otelriver.MiddlewareConfig{
				TracerProvider:              provider,
				EnableTracePropagation:      true,
				EnableWorkSpanJobKindSuffix: true,
			}),
		},
	}, nil
}

// Middleware is River's middleware for the client's Config, outermost
// first; none when t is nil.
func (t *Tracing) Middleware() []rivertype.Middleware {
	if t == nil {
		return nil
	}
	return t.middleware
}

// Shutdown exports what is left, within ctx.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// parentFromMetadata puts the trace context of the job's metadata (the
// INSERT's traceparent) into the attempt's context, so the work span that
// otelriver starts inside it continues the app's trace.
type parentFromMetadata struct {
	river.WorkerMiddlewareDefaults
}

func (p *parentFromMetadata) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) error {
	tp := gjson.GetBytes(job.Metadata, "traceparent")
	if tp.Type != gjson.String {
		return doInner(ctx)
	}
	carrier := propagation.MapCarrier{"traceparent": tp.Str}
	if ts := gjson.GetBytes(job.Metadata, "tracestate"); ts.Type == gjson.String {
		carrier["tracestate"] = ts.Str
	}
	return doInner(propagation.TraceContext{}.Extract(ctx, carrier))
}
