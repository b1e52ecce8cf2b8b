package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

type strictArgs struct {
	To    string            `json:"to"`
	Tags  map[string]string `json:"tags,omitempty"`
	Raw   json.RawMessage   `json:"payload,omitempty"`
	Files []struct {
		Name string `json:"name"`
	} `json:"files,omitempty"`
}

// A strict kind's job whose args carry a field its args type does not have
// (a misspelling, or a field the kind does not support) fails at once,
// naming the field, instead of running without it. Maps and raw JSON stay
// free-form; a kind that is not strict ignores the field, as before.
func TestStrictArgsFailNamingAnUnknownField(t *testing.T) {
	cases := []struct {
		name, args, unknown string
	}{
		{"a field the kind does not have", `{"to": "a@example.com", "cc": "b@example.com"}`, `decode args: json: unknown field "cc"`},
		{"a field in camel case", `{"to": "a@example.com", "replyTo": "b@example.com"}`, `decode args: json: unknown field "replyTo"`},
		{"a misspelt field inside an array", `{"to": "a@example.com", "files": [{"nmae": "r.pdf"}]}`, `decode args: json: unknown field "nmae"`},
		{"any key of a map", `{"to": "a@example.com", "tags": {"cc": "x"}}`, ""},
		{"any field of raw JSON", `{"to": "a@example.com", "payload": {"cc": "x"}}`, ""},
		{"fields in another case", `{"To": "a@example.com"}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, strict := range []bool{true, false} {
				ran := false
				opts := []Option{}
				if strict {
					opts = append(opts, WithStrictArgs())
				}
				work := func(context.Context, *Job, strictArgs) error { ran = true; return nil }
				w := &worker[strictArgs]{kind: Define("test.strict", QueueDefault, work, opts...), work: work}
				var env envelope[strictArgs]
				if err := json.Unmarshal([]byte(tc.args), &env); err != nil {
					t.Fatal(err)
				}
				err := w.Work(context.Background(), &river.Job[envelope[strictArgs]]{
					JobRow: &rivertype.JobRow{ID: 1, EncodedArgs: []byte(tc.args), Metadata: []byte(`{}`)},
					Args:   env,
				})
				switch {
				case strict && tc.unknown != "":
					var d *decodeError
					if !IsPermanent(err) || !errors.As(err, &d) || d.Error() != tc.unknown {
						t.Errorf("strict: %v, want a permanent %q", err, tc.unknown)
					}
					if ran {
						t.Error("strict: the work ran")
					}
				case err != nil || !ran:
					t.Errorf("strict %v: err %v, ran %v; want the work run", strict, err, ran)
				}
			}
		})
	}
}
