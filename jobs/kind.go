// Package jobs is the SDK every job kind is built with, errand's own
// (jobs/ping, jobs/email, ...) and a team's alike: Define makes a kind from
// an args type and a work function, options give it a timeout, its
// environment variables and its start-up (routes, readiness problems), and
// Job gives the work function its workspace-scoped transactions.
//
//	type ExportArgs struct {
//		ReportID int64 `json:"report_id" errand:"required"` // refused at INSERT when missing
//	}
//
//	func exportKind() jobs.Kind {
//		return jobs.Define("report.export", jobs.QueueReports,
//			func(ctx context.Context, job *jobs.Job, args ExportArgs) error {
//				return job.CompleteInWorkspace(ctx, func(tx pgx.Tx) error {
//					_, err := tx.Exec(ctx, `UPDATE my_app.reports SET exported_at = now() WHERE id = $1`, args.ReportID)
//					return err
//				})
//			}, jobs.WithTimeout(5*time.Minute))
//	}
//
// A binary runs it with errand.Main(ctx, args, getenv, stdout, stderr,
// errand.WithKinds(exportKind())): the package example is that binary, and
// errand's Example_ownKind runs a team's kind end to end (its own queue,
// variable and route). Build kinds in
// a function, once per errand.Main, not in package variables: a kind that
// reads its configuration in setup keeps it in the closure. Its table
// (my_app.reports here) is the team's: see the README's "Tenants" for its
// row level security and errand.grant_tenant.
package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/tidwall/gjson"

	"github.com/errand-dev/errand/store"
)

// The queues errand starts. A kind names one of them, or a queue of its
// own (WithQueueWorkers).
const (
	QueueEmail     = "email"
	QueueWebhooks  = "webhooks"
	QueueDocuments = "documents"
	QueueReports   = "reports"
	QueueDefault   = "default"
)

// Queues lists errand's queues in a stable order.
var Queues = []string{QueueEmail, QueueWebhooks, QueueDocuments, QueueReports, QueueDefault}

// WorkFunc does one job. Returning an error retries it with backoff, unless
// the error is Permanent; a panic counts as an error.
type WorkFunc[T any] func(ctx context.Context, job *Job, args T) error

// Kind is a named job kind: where its jobs run, how long one may take, and
// how to work it. Build one with Define.
type Kind struct {
	Name        string
	Queue       string
	Description string
	// Timeout bounds one attempt (River's per-worker timeout); 0 means 1 minute.
	Timeout time.Duration
	// MaxAttempts is the default when an INSERT gives none; 0 means 25.
	MaxAttempts int
	// RequiredArgs are the args fields an INSERT must carry, read from the
	// args type's `errand:"required"` struct tags.
	RequiredArgs []string
	// ArgEnums limits args fields to fixed sets of string values (see
	// WithArgEnum); the SQL contract refuses other values at INSERT.
	ArgEnums map[string][]string
	// StrictArgs fails a job whose args carry a field the args type does
	// not have (see WithStrictArgs).
	StrictArgs bool
	// Env are the environment variables the kind reads (see WithEnv).
	Env []EnvVar
	// Schedules are the kind's entries in errand's cron table (see
	// WithSchedule and package schedules).
	Schedules []Schedule
	// QueueWorkers, for a kind whose Queue is not one of errand's (Queues),
	// is that queue's workers per replica unless ERRAND_QUEUES sets them
	// (see WithQueueWorkers); 0 for a kind in one of errand's queues.
	QueueWorkers int

	register func(w *river.Workers, st *store.Store)
	setup    SetupFunc
	// defErrs are mistakes in the definition, reported by Registry.Add so
	// that the binary refuses to start instead of failing every job.
	defErrs []string
}

// Option adjusts a Kind in Define.
type Option func(*Kind)

// WithTimeout sets the per-attempt timeout.
func WithTimeout(d time.Duration) Option { return func(k *Kind) { k.Timeout = d } }

// WithMaxAttempts sets the default number of attempts.
func WithMaxAttempts(n int) Option { return func(k *Kind) { k.MaxAttempts = n } }

// WithQueueWorkers runs the kind in a queue of its own, the queue named in
// Define, instead of one of errand's (Queues): the queue gets workers
// workers on every replica unless ERRAND_QUEUES gives it another count, as
// it does errand's own queues (0 there leaves it to other replicas). Its
// name is River's kind of queue name: lower-case letters and digits, words
// joined by '_' or '-', at most 64 characters. Kinds that share a queue of
// their own give it the same count. Without this option a queue that is not
// errand's is refused, so a misspelt "emial" cannot start a queue nobody
// meant.
func WithQueueWorkers(workers int) Option { return func(k *Kind) { k.QueueWorkers = workers } }

// WithDescription documents the kind in errand.kinds.
func WithDescription(s string) Option { return func(k *Kind) { k.Description = s } }

// WithArgEnum limits the args field to values: an INSERT carrying the field
// with any other value (or a non-string) is refused. A missing or null field
// is left to RequiredArgs.
func WithArgEnum(field string, values ...string) Option {
	return func(k *Kind) {
		if k.ArgEnums == nil {
			k.ArgEnums = map[string][]string{}
		}
		k.ArgEnums[field] = slices.Clone(values)
	}
}

// WithStrictArgs fails a job at once, naming the field, when its args carry
// a field the args type does not have (at any depth; a map's keys and a
// json.RawMessage's contents are the type's own business): a misspelt or
// unsupported field ("cc", "replyTo" for "reply_to") would otherwise be
// dropped without a word. Use it for args whose fields are fixed; a kind
// whose args gain fields over releases, and whose older replicas may work a
// newer binary's jobs, should not.
func WithStrictArgs() Option { return func(k *Kind) { k.StrictArgs = true } }

// Define makes a kind whose args decode into T (a struct, a pointer to one,
// or a map with string keys: args are a JSON object). Decoding ignores
// unknown fields, so two versions of a binary can run side by side, unless
// the kind is WithStrictArgs. If T (or *T) has a `Validate() error` method,
// an error from it fails the job at once.
func Define[T any](name, queue string, work WorkFunc[T], opts ...Option) Kind {
	t := reflect.TypeFor[T]()
	if t.Kind() == reflect.Pointer {
		t = t.Elem() // encoding/json decodes an object into *Args too
	}
	fields, defErrs := argFields(t, nil)
	k := Kind{Name: name, Queue: queue, defErrs: defErrs}
	for _, f := range fields {
		if f.required {
			k.RequiredArgs = append(k.RequiredArgs, f.name)
		}
	}
	if t.Kind() != reflect.Struct && (t.Kind() != reflect.Map || t.Key().Kind() != reflect.String) {
		k.defErrs = append(k.defErrs, fmt.Sprintf("args type %v is not a struct (or a map with string keys): args are a JSON object", reflect.TypeFor[T]()))
	}
	if work == nil {
		k.defErrs = append(k.defErrs, "the work function is nil")
	}
	for _, o := range opts {
		o(&k)
	}
	if k.Timeout <= 0 {
		k.Timeout = time.Minute
	}
	if k.MaxAttempts <= 0 {
		k.MaxAttempts = 25
	}
	if k.MaxAttempts > maxAttemptsLimit {
		k.defErrs = append(k.defErrs, fmt.Sprintf("WithMaxAttempts(%d): at most %d (the SQL contract refuses more)", k.MaxAttempts, maxAttemptsLimit))
	}
	for _, ev := range k.Env {
		// Set by errand dev after the variables were checked at start.
		if ev.Dev != "" && ev.Check != nil {
			if err := ev.Check(ev.Dev); err != nil {
				k.defErrs = append(k.defErrs, fmt.Sprintf("variable %s: its Dev value %q: %v", ev.Name, ev.Dev, err))
			}
		}
	}
	for _, field := range slices.Sorted(maps.Keys(k.ArgEnums)) {
		if len(k.ArgEnums[field]) == 0 {
			k.defErrs = append(k.defErrs, fmt.Sprintf("WithArgEnum(%q) gives no values", field))
		}
		if t.Kind() == reflect.Struct && !slices.ContainsFunc(fields, func(f argField) bool { return f.name == field }) {
			k.defErrs = append(k.defErrs, fmt.Sprintf("WithArgEnum(%q): the args type %v has no such JSON field", field, t))
		}
	}
	kind := k
	k.register = func(w *river.Workers, st *store.Store) {
		river.AddWorkerArgs(w, envelope[T]{kind: name}, &worker[T]{kind: kind, work: work, store: st})
	}
	return k
}

// Info is what the SQL contract needs to know about the kind.
func (k Kind) Info() store.KindInfo {
	return store.KindInfo{Kind: k.Name, Queue: k.Queue, RequiredArgs: k.RequiredArgs, ArgEnums: k.ArgEnums, MaxAttempts: k.MaxAttempts, Description: k.Description}
}

// maxAttemptsLimit is the most attempts the SQL contract accepts.
const maxAttemptsLimit = 1000

// argField is a field of an args type as encoding/json names it, and
// whether its `errand:"required"` tag makes an INSERT carry it.
type argField struct {
	name     string
	required bool
}

// argFields lists t's JSON fields (those of embedded structs without a
// name of their own included, as encoding/json promotes them), and the
// mistakes in its tags: a required field that encoding/json never fills, an
// embedded pointer it cannot set. seen holds the structs being walked (a
// struct may embed a pointer to itself).
func argFields(t reflect.Type, seen []reflect.Type) ([]argField, []string) {
	if t.Kind() != reflect.Struct || slices.Contains(seen, t) {
		return nil, nil
	}
	seen = append(seen, t)
	var out []argField
	var errs []string
	for f := range t.Fields() {
		required := f.Tag.Get("errand") == "required"
		tag := f.Tag.Get("json")
		if tag == "-" {
			if required {
				errs = append(errs, fmt.Sprintf("field %s is required, but its json:\"-\" tag leaves it out of the args", f.Name))
			}
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			if f.Type.Kind() == reflect.Pointer && !f.IsExported() {
				errs = append(errs, fmt.Sprintf("embedded field *%s is a pointer to an unexported struct, which encoding/json cannot set: embed the struct itself, or export it", ft.Name()))
				continue
			}
			inner, innerErrs := argFields(ft, seen)
			out = append(out, inner...)
			errs = append(errs, innerErrs...)
			continue
		}
		if !f.IsExported() {
			if required {
				errs = append(errs, fmt.Sprintf("field %s is required, but unexported fields are never decoded", f.Name))
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, argField{name: name, required: required})
	}
	return out, errs
}

// Permanent marks err as one retrying cannot fix: the job fails at once with
// err as its reason.
func Permanent(err error) error { return river.JobCancel(err) }

// IsPermanent reports whether err fails a job at once.
func IsPermanent(err error) bool {
	var cancel *rivertype.JobCancelError
	return errors.As(err, &cancel)
}

// RetryAfter makes a failed attempt's retry wait at least d (a provider's
// Retry-After) instead of the usual backoff; the attempt still counts. To wait
// without using an attempt, return Snooze(d) instead.
func RetryAfter(err error, d time.Duration) error { return &retryAfterError{err: err, after: d} }

// Snooze puts the job back to wait d without using an attempt (a rate
// limit, a resource not ready yet): River's JobSnooze, so a kind need not
// import River for it. The job runs again after d, with the same attempt
// number; a job that snoozes for ever never fails, so bound the waits.
func Snooze(d time.Duration) error { return river.JobSnooze(d) }

type retryAfterError struct {
	err   error
	after time.Duration
}

func (r *retryAfterError) Error() string { return r.err.Error() }
func (r *retryAfterError) Unwrap() error { return r.err }

// Job is what a WorkFunc gets besides its args.
type Job struct {
	ID          int64
	Kind        string
	WorkspaceID string
	Attempt     int
	MaxAttempts int

	row      *rivertype.JobRow
	store    *store.Store
	complete func(ctx context.Context, tx pgx.Tx) error
}

// Store is the pool the job runs on: use it for queries that are not
// tenant data (settings, rate limits); tenant data goes through InWorkspace.
func (j *Job) Store() *store.Store { return j.store }

// InWorkspace runs fn in a transaction scoped to the job's workspace (see
// store.InWorkspace). A workspace that no longer exists fails the job at once.
func (j *Job) InWorkspace(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return permanentIfGone(j.store.InWorkspace(ctx, j.WorkspaceID, fn))
}

// CompleteInWorkspace runs fn scoped to the job's workspace and marks the job
// completed in the same transaction: fn's writes commit exactly when the job
// completes, so a retried or rescued job cannot apply them twice. The
// transaction commits only if this attempt still owns the job (its row,
// locked, is running this attempt on this replica); otherwise it rolls back
// and the error wraps ErrAttemptSuperseded.
func (j *Job) CompleteInWorkspace(ctx context.Context, fn func(tx pgx.Tx) error) error {
	err := pgx.BeginFunc(ctx, j.store.Pool(), func(tx pgx.Tx) error {
		if err := j.store.Scope(ctx, tx, j.WorkspaceID); err != nil {
			return err
		}
		if err := fn(tx); err != nil {
			return err
		}
		if err := j.store.Unscope(ctx, tx); err != nil {
			return err
		}
		return j.complete(ctx, tx)
	})
	return permanentIfGone(err)
}

// ErrAttemptSuperseded is returned (wrapped) by CompleteInWorkspace when the
// job no longer belongs to this attempt: it was rescued (its replica looked
// dead, or River's stuck-job rescuer took it), rerun, or finished by another
// attempt. Nothing of the transaction committed.
var ErrAttemptSuperseded = errors.New("this attempt no longer owns the job; its writes were rolled back")

func lastAttemptedBy(row *rivertype.JobRow) string {
	if len(row.AttemptedBy) == 0 {
		return ""
	}
	return row.AttemptedBy[len(row.AttemptedBy)-1]
}

func permanentIfGone(err error) error {
	if errors.Is(err, store.ErrWorkspaceNotFound) && !IsPermanent(err) {
		return Permanent(err)
	}
	return err
}

// envelope carries T through River: River needs a Kind() method and a fixed
// type per kind, and decoding through it lets a bad payload be told apart
// from an error returned by the work itself.
type envelope[T any] struct {
	kind string
	args T
	// retryAfter is set by Work from a RetryAfter error and read by
	// NextRetry: the envelope is the one piece of state per job, not per kind.
	retryAfter time.Duration
}

// Kind names the kind. River also calls it on a zero envelope (plugin
// lookup), where it is "": errand's kinds register no per-kind hooks, so
// they share that entry harmlessly.
func (e envelope[T]) Kind() string { return e.kind }

func (e *envelope[T]) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &e.args); err != nil {
		return &decodeError{err: err}
	}
	return nil
}

func (e envelope[T]) MarshalJSON() ([]byte, error) { return json.Marshal(e.args) }

type decodeError struct{ err error }

func (d *decodeError) Error() string { return "decode args: " + d.err.Error() }
func (d *decodeError) Unwrap() error { return d.err }

type validator interface{ Validate() error }

type worker[T any] struct {
	river.WorkerDefaults[envelope[T]]
	kind  Kind
	work  WorkFunc[T]
	store *store.Store
}

func (w *worker[T]) Timeout(*river.Job[envelope[T]]) time.Duration { return w.kind.Timeout }

// NextRetry honours RetryAfter; the zero time means the client's policy.
func (w *worker[T]) NextRetry(rj *river.Job[envelope[T]]) time.Time {
	if rj.Args.retryAfter <= 0 {
		return time.Time{}
	}
	return time.Now().Add(rj.Args.retryAfter)
}

func (w *worker[T]) Work(ctx context.Context, rj *river.Job[envelope[T]]) error {
	if err := checkArgs(rj.EncodedArgs, w.kind.RequiredArgs, w.kind.ArgEnums); err != nil {
		return Permanent(err)
	}
	if w.kind.StrictArgs {
		if err := decodeStrict[T](rj.EncodedArgs); err != nil {
			return Permanent(err)
		}
	}
	if v, ok := any(rj.Args.args).(validator); ok {
		if err := v.Validate(); err != nil {
			return Permanent(fmt.Errorf("invalid args: %w", err))
		}
	} else if v, ok := any(&rj.Args.args).(validator); ok {
		if err := v.Validate(); err != nil {
			return Permanent(fmt.Errorf("invalid args: %w", err))
		}
	}
	job := &Job{
		ID:          rj.ID,
		Kind:        rj.Kind,
		WorkspaceID: WorkspaceOf(rj.JobRow),
		Attempt:     rj.Attempt,
		MaxAttempts: rj.MaxAttempts,
		row:         rj.JobRow,
		store:       w.store,
		complete: func(ctx context.Context, tx pgx.Tx) error {
			// River completes a job only if it is running, and otherwise
			// returns the row as it is: a late attempt would find the rerun's
			// "completed" and commit its writes a second time. So the row is
			// locked and must still be this attempt's (a rescue always ends
			// an attempt; a rerun has a higher attempt number).
			o, err := lockOwner(ctx, tx, rj.ID)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("job %d was deleted: %w", rj.ID, ErrAttemptSuperseded)
			}
			if err != nil {
				return err
			}
			if o.State != string(rivertype.JobStateRunning) || o.Attempt != rj.Attempt || o.By != lastAttemptedBy(rj.JobRow) {
				return fmt.Errorf("job %d attempt %d by %s: the job is %s at attempt %d by %s: %w",
					rj.ID, rj.Attempt, lastAttemptedBy(rj.JobRow), o.State, o.Attempt, o.By, ErrAttemptSuperseded)
			}
			done, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, rj)
			if err != nil {
				return err
			}
			// The database's completion guard may still refuse (a replica
			// id that is not this attempt's): nothing may commit then either.
			if done.State != rivertype.JobStateCompleted {
				return fmt.Errorf("job %d not completed by attempt %d (state %s): %w", rj.ID, rj.Attempt, done.State, ErrAttemptSuperseded)
			}
			return nil
		},
	}
	err := w.work(ctx, job, rj.Args.args)
	var ra *retryAfterError
	if errors.As(err, &ra) {
		rj.Args.retryAfter = ra.after
	}
	return err
}

// decodeStrict decodes raw again, refusing unknown fields. River decodes
// args before the worker is known (into a zero envelope, which cannot say
// which kind it is for), so a strict kind pays for a second decode.
func decodeStrict[T any](raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var args T
	if err := dec.Decode(&args); err != nil {
		return &decodeError{err: err}
	}
	return nil
}

// checkArgs repeats the SQL contract's required-field and arg_enums checks
// for jobs that did not come through it (written straight into River's table,
// or published by an older binary), decoding the args' top level once.
func checkArgs(raw []byte, required []string, enums map[string][]string) error {
	if len(required) == 0 && len(enums) == 0 {
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return &decodeError{err: err}
	}
	var missing []string
	for _, r := range required {
		if v, ok := fields[r]; !ok || bytes.Equal(v, []byte("null")) {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("args are missing required field(s): %s", strings.Join(missing, ", "))
	}
	for _, name := range slices.Sorted(maps.Keys(enums)) {
		v, ok := fields[name]
		if !ok || bytes.Equal(v, []byte("null")) {
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil || !slices.Contains(enums[name], s) {
			if err != nil {
				s = string(v)
			}
			return fmt.Errorf("args field %q must be one of: %s, got %q", name, strings.Join(enums[name], ", "), s)
		}
	}
	return nil
}

// WorkspaceOf reads the workspace id errand keeps in River's metadata. It
// runs for every job, so it scans for the one field instead of decoding the
// whole object.
func WorkspaceOf(row *rivertype.JobRow) string {
	return gjson.GetBytes(row.Metadata, "workspace_id").String()
}

// IsDecodeError reports whether err came from decoding a job's args.
func IsDecodeError(err error) bool {
	var d *decodeError
	return errors.As(err, &d)
}

// Schedule is a recurring entry a kind adds to errand's cron table (package
// schedules, which runs it): whenever Spec fires, the elected leader
// enqueues one fan-out job for that period, unique per period, and the
// fan-out job calls Tick. A period runs once however often it is enqueued.
type Schedule struct {
	// Name names the entry in ERRAND_SCHEDULES and `errand schedules list`:
	// lowercase letters, digits and underscores.
	Name string
	// Spec is the default expression: cron's five fields (robfig/cron's
	// standard syntax), in UTC unless prefixed with CRON_TZ=<zone>, or
	// "@every <duration>" (aligned to the Unix epoch, at least 1m).
	// ERRAND_SCHEDULES overrides it.
	Spec string
	// EveryEnv, when set, names one of the kind's variables (WithEnv)
	// holding a duration: the default becomes "@every <its value>".
	EveryEnv string
	// MaxGapEnv, when set, names one of the kind's variables holding a
	// duration that the entry's times may be at most apart: a tick that
	// only acts on what became due up to that long ago (the digests'
	// ERRAND_DIGEST_BACKFILL) would drop work if ticks were further apart.
	// The table refuses at start an expression, ERRAND_SCHEDULES' overrides
	// included, whose times are ever further apart (looked for over two
	// years of times, schedules.Load).
	MaxGapEnv string
	// Description is shown by `errand schedules list`.
	Description string
	// Pending reports whether the period that began at has anything to do
	// (one indexed query): when it is false no fan-out job is enqueued, so
	// an idle system makes no jobs. Nil means always.
	Pending func(ctx context.Context, db store.DB, at time.Time) (bool, error)
	// Tick does the period's work in tx, the transaction that completes the
	// fan-out job, as errand's own role with no workspace scope: list
	// workspaces (store.ForEachWorkspace, or an index of errand's own) and
	// enqueue per-workspace jobs through the SQL contract (errand.jobs). It
	// returns how many jobs it enqueued.
	Tick func(ctx context.Context, tx pgx.Tx, at time.Time) (int, error)
}

// WithSchedule adds an entry to errand's cron table for the kind.
func WithSchedule(s Schedule) Option {
	return func(k *Kind) { k.Schedules = append(k.Schedules, s) }
}
