package jobs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"
)

func TestRetryPolicyDoublesWithJitterUpToTheCap(t *testing.T) {
	cases := []struct {
		attempt  int
		rand     float64
		want     time.Duration
		scenario string
	}{
		{1, 0, 500 * time.Millisecond, "first retry, least jitter: half the base"},
		{1, 1, time.Second, "first retry, most jitter: the base"},
		{2, 1, 2 * time.Second, "second retry doubles"},
		{4, 0.5, 6 * time.Second, "fourth retry: 8s window, midpoint"},
		{40, 1, time.Hour, "many attempts stop at the cap"},
		{1 << 20, 1, time.Hour, "an absurd attempt count neither overflows nor loops for long"},
	}
	for _, tc := range cases {
		t.Run(tc.scenario, func(t *testing.T) {
			p := &RetryPolicy{Base: time.Second, Rand: func() float64 { return tc.rand }}
			if got := p.Delay(tc.attempt); got != tc.want {
				t.Errorf("Delay(%d) with rand %v = %s, want %s", tc.attempt, tc.rand, got, tc.want)
			}
		})
	}
}

type taggedArgs struct {
	To       string `json:"to" errand:"required"`
	Template string `json:"template,omitempty" errand:"required"`
	Optional string `json:"optional"`
	NoTag    string `errand:"required"`
}

func TestRequiredArgsComeFromStructTags(t *testing.T) {
	k := Define("test.tags", QueueDefault, func(context.Context, *Job, taggedArgs) error { return nil })
	if want := []string{"to", "template", "NoTag"}; !slices.Equal(k.RequiredArgs, want) {
		t.Errorf("required %v, want %v", k.RequiredArgs, want)
	}
	if k.Timeout != time.Minute || k.MaxAttempts != 25 {
		t.Errorf("defaults: timeout %s max attempts %d", k.Timeout, k.MaxAttempts)
	}
}

func TestCheckRequiredNamesWhatIsMissing(t *testing.T) {
	cases := map[string]struct {
		raw, missing string
	}{
		"field left out":    {`{"to": "a@b.c"}`, "template"},
		"field set to null": {`{"to": null, "template": "x"}`, "to"},
		"both left out":     {`{}`, "to, template"},
		"nothing missing":   {`{"to": "a", "template": "b"}`, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := checkArgs([]byte(tc.raw), []string{"to", "template"}, nil)
			if tc.missing == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasSuffix(err.Error(), "missing required field(s): "+tc.missing) {
				t.Errorf("got %v, want missing %s", err, tc.missing)
			}
		})
	}
}

type embeddedArgs struct {
	Inner `json:""`
	Other string `json:"other"`
}

type Inner struct {
	ID string `json:"id" errand:"required"`
}

type hiddenBase struct {
	ID string `json:"id" errand:"required"`
}

type withHiddenPointer struct {
	*hiddenBase
}

// A struct may embed a pointer to itself (encoding/json copes).
type TreeArgs struct {
	*TreeArgs
	Leaf string `json:"leaf" errand:"required"`
}

type pointerArgs struct {
	ReportID string `json:"report_id" errand:"required"`
}

// Definitions that look unusual and work: a struct embedding a pointer to
// itself, a pointer to a struct, a map, a name outside ASCII.
func TestRegistryTakesUnusualDefinitionsThatWork(t *testing.T) {
	cases := map[string]struct {
		kind     Kind
		required []string
	}{
		"a struct embedding a pointer to itself": {Define("test.tree", QueueDefault, func(context.Context, *Job, TreeArgs) error { return nil }), []string{"leaf"}},
		"a pointer to a struct":                  {Define("test.pointer", QueueDefault, func(context.Context, *Job, *pointerArgs) error { return nil }), []string{"report_id"}},
		"a map with string keys":                 {Define("test.map", QueueDefault, func(context.Context, *Job, map[string]any) error { return nil }), nil},
		"a name outside ASCII":                   {Define("facture.émise", QueueDefault, func(context.Context, *Job, struct{}) error { return nil }), nil},
		"a name with a plus and an at sign":      {Define("report+v2@eu", QueueDefault, func(context.Context, *Job, struct{}) error { return nil }), nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := NewRegistry(tc.kind); err != nil {
				t.Errorf("NewRegistry: %v", err)
			}
			if !slices.Equal(tc.kind.RequiredArgs, tc.required) {
				t.Errorf("required %v, want %v", tc.kind.RequiredArgs, tc.required)
			}
		})
	}
}

func TestRegistryRefusesBadKinds(t *testing.T) {
	noop := func(context.Context, *Job, struct{}) error { return nil }
	cases := map[string]struct {
		kind Kind
		want string
	}{
		"a kind on a queue that does not exist": {Define("test.q", "nope", noop), `unknown queue "nope" (errand's queues: email, webhooks, documents, reports, default; a queue of the kind's own needs jobs.WithQueueWorkers)`},
		"workers for one of errand's queues":    {Define("test.q", QueueEmail, noop, WithQueueWorkers(4)), `WithQueueWorkers(4) is for a queue of the kind's own; errand's queue "email" takes its workers from ERRAND_QUEUES`},
		"a queue of its own with capitals":      {Define("test.q", "Exports", noop, WithQueueWorkers(4)), `queue "Exports": a queue's name is lower-case letters and digits`},
		"a queue of its own with a space":       {Define("test.q", "report exports", noop, WithQueueWorkers(4)), `queue "report exports": a queue's name`},
		"a queue of its own ending in '_'":      {Define("test.q", "exports_", noop, WithQueueWorkers(4)), `queue "exports_": a queue's name`},
		"a queue of its own of 65 characters":   {Define("test.q", strings.Repeat("q", 65), noop, WithQueueWorkers(4)), `a queue's name is lower-case letters and digits, words joined by '_' or '-', at most 64 characters`},
		"a queue of its own with no workers":    {Define("test.q", "exports", noop, WithQueueWorkers(-1)), `WithQueueWorkers(-1): want 1 to 10000 workers`},
		"a queue of its own with 10001 workers": {Define("test.q", "exports", noop, WithQueueWorkers(10001)), `WithQueueWorkers(10001): want 1 to 10000 workers`},
		"a shared queue of its own with another count": {Define("test.q", "pings", noop, WithQueueWorkers(3)),
			`WithQueueWorkers(3) for queue "pings", but kind "test.pings" gives it 2; kinds that share a queue give it the same count`},
		"a kind not built with Define":          {Kind{Name: "test.raw", Queue: QueueDefault}, "build kinds with jobs.Define"},
		"the same name twice":                   {Define("ping", QueueDefault, noop), "already registered"},
		"an empty name":                         {Define("", QueueDefault, noop), "a kind's name is 1 to 128 characters"},
		"a name with a space":                   {Define("report export", QueueDefault, noop), "a kind's name is 1 to 128 characters"},
		"a name with a newline":                 {Define("report\nexport", QueueDefault, noop), "a kind's name is 1 to 128 characters"},
		"a name of 129 characters":              {Define(strings.Repeat("r", 129), QueueDefault, noop), "a kind's name is 1 to 128 characters"},
		"more attempts than the contract takes": {Define("test.many", QueueDefault, noop, WithMaxAttempts(5000)), "WithMaxAttempts(5000): at most 1000"},
		"an enum without values": {Define("test.enum", QueueDefault, func(context.Context, *Job, struct {
			Mode string `json:"mode"`
		}) error {
			return nil
		}, WithArgEnum("mode")), `WithArgEnum("mode") gives no values`},
		"an enum on a field the args do not have": {Define("test.enum", QueueDefault, func(context.Context, *Job, struct {
			Mode string `json:"mode"`
		}) error {
			return nil
		}, WithArgEnum("mood", "x")), `WithArgEnum("mood"): the args type`},
		"a required field hidden from JSON": {Define("test.dash", QueueDefault, func(context.Context, *Job, struct {
			Secret string `json:"-" errand:"required"`
		}) error {
			return nil
		}), `field Secret is required, but its json:"-" tag`},
		"a required field that is unexported": {Define("test.lower", QueueDefault, func(context.Context, *Job, struct {
			secret string `errand:"required"`
		}) error {
			return nil
		}), "field secret is required, but unexported"},
		"an embedded pointer to an unexported struct": {Define("test.embptr", QueueDefault, func(context.Context, *Job, withHiddenPointer) error { return nil }), "embedded field *hiddenBase is a pointer to an unexported struct"},
		"a name with an invisible character":          {Define("report\u200bexport", QueueDefault, noop), "a kind's name is 1 to 128 characters"},
		"args that are not a struct":                  {Define("test.string", QueueDefault, func(context.Context, *Job, string) error { return nil }), "args type string is not a struct"},
		"no work function":                            {Define[struct{}]("test.nil", QueueDefault, nil), "the work function is nil"},
		"a variable with an empty name":               {Define("test.env", QueueDefault, noop, WithEnv(EnvVar{Name: ""})), `variable "": a name is capital letters`},
		"a variable in lower case":                    {Define("test.env", QueueDefault, noop, WithEnv(EnvVar{Name: "export_bucket"})), `variable "export_bucket"`},
		"a dev default its own check refuses": {Define("test.env", QueueDefault, noop, WithEnv(EnvVar{Name: "EXPORT_SANDBOX", Dev: "yes",
			Check: func(v string) error {
				if v != "true" && v != "false" {
					return errors.New("want true or false")
				}
				return nil
			}})), `variable EXPORT_SANDBOX: its Dev value "yes": want true or false`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r, err := NewRegistry(Define("ping", QueueDefault, noop), Define("test.pings", "pings", noop, WithQueueWorkers(2)))
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Add(tc.kind); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Add(%q) = %v, want an error saying %q", tc.kind.Name, err, tc.want)
			}
		})
	}
}

// A kind may run in a queue of its own: kinds sharing it agree on its
// workers, and OwnQueues lists each such queue once, in the kinds' order,
// without errand's.
func TestKindsBringTheirOwnQueues(t *testing.T) {
	noop := func(context.Context, *Job, struct{}) error { return nil }
	kinds := []Kind{
		Define("report.export", "report_exports", noop, WithQueueWorkers(4)),
		Define("ping", QueueDefault, noop),
		Define("report.archive", "report_exports", noop, WithQueueWorkers(4)),
		Define("thumbnail.make", "thumbnails-v2", noop, WithQueueWorkers(1)),
	}
	if _, err := NewRegistry(kinds...); err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	want := []OwnQueue{{"report_exports", 4}, {"thumbnails-v2", 1}}
	if got := OwnQueues(kinds); !slices.Equal(got, want) {
		t.Errorf("OwnQueues = %v, want %v", got, want)
	}
}

// Fields of an embedded struct are the args' own (encoding/json promotes
// them): a required one there is required.
func TestRequiredArgsOfAnEmbeddedStructAreRequired(t *testing.T) {
	k := Define("test.embedded", QueueDefault, func(context.Context, *Job, embeddedArgs) error { return nil }, WithArgEnum("id", "a"))
	if want := []string{"id"}; !slices.Equal(k.RequiredArgs, want) {
		t.Errorf("required %v, want %v", k.RequiredArgs, want)
	}
	if _, err := NewRegistry(k); err != nil {
		t.Errorf("an enum on an embedded struct's field: %v", err)
	}
}

// Idempotency keys are hashed from workspace/kind/key: a '/' in a kind's
// name would let kind "report" with key "pdf/x" return kind "report/pdf"'s
// job with key "x".
func TestRegistryRefusesAKindNameWithASlash(t *testing.T) {
	noop := func(context.Context, *Job, struct{}) error { return nil }
	_, err := NewRegistry(Define("report", QueueReports, noop), Define("report/pdf", QueueReports, noop))
	want := `register kind "report/pdf": a kind's name may not contain "/" (use dots, as in report.pdf)`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestWorkspaceOfReadsRiversMetadata(t *testing.T) {
	cases := map[string]struct{ metadata, want string }{
		"errand's metadata":            {`{"workspace_id": "5dac5824-4ac0-4db5-8f13-b01ac0ac2c36", "idempotency_key": "k"}`, "5dac5824-4ac0-4db5-8f13-b01ac0ac2c36"},
		"a job without a workspace":    {`{"river:periodic": true}`, ""},
		"empty metadata":               {`{}`, ""},
		"a workspace nested elsewhere": {`{"other": {"workspace_id": "x"}}`, ""},
	}
	for name, tc := range cases {
		if got := WorkspaceOf(&rivertype.JobRow{Metadata: []byte(tc.metadata)}); got != tc.want {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}
}

func TestCheckEnumsRepeatsTheContract(t *testing.T) {
	enums := map[string][]string{"template": {"invite", "custom"}}
	for raw, want := range map[string]string{
		`{"template": "invite"}`:  "",
		`{"template": null}`:      "",
		`{}`:                      "",
		`{"template": "welcome"}`: `args field "template" must be one of: invite, custom, got "welcome"`,
		`{"template": 5}`:         `got "5"`,
	} {
		err := checkArgs([]byte(raw), nil, enums)
		if (want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", raw, err, want)
		}
	}
	k := Define("test.enum", QueueDefault, func(context.Context, *Job, struct{}) error { return nil }, WithArgEnum("mode", "a", "b"))
	if got := k.Info().ArgEnums["mode"]; !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("published enum %v", got)
	}
}
