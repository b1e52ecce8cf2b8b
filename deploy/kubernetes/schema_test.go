package kubernetes_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// schema is the part of a CRD's OpenAPI v3 schema (a structural schema, as
// the API server requires of CRDs) that this validator understands. A schema
// that uses any other keyword does not load, so nothing in KEDA's CRDs is
// silently ignored. Description is read and not used.
type schema struct {
	Description          string             `json:"description"`
	Default              any                `json:"default"` // what the API server fills in when the field is absent
	Type                 string             `json:"type"`
	Format               string             `json:"format"`
	Properties           map[string]*schema `json:"properties"`
	Required             []string           `json:"required"`
	Items                *schema            `json:"items"`
	Enum                 []any              `json:"enum"`
	AdditionalProperties *schema            `json:"additionalProperties"`
	IntOrString          bool               `json:"x-kubernetes-int-or-string"`
	PreserveUnknown      bool               `json:"x-kubernetes-preserve-unknown-fields"`
	// ListType "atomic" (or none) asks nothing of an array's items; "set"
	// and "map" would, and this validator refuses to walk them.
	ListType string `json:"x-kubernetes-list-type"`
}

// loadCRDSchema reads a CustomResourceDefinition as KEDA publishes it and
// returns the OpenAPI v3 schema of its version.
func loadCRDSchema(path, version string) (*schema, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSONStrict(bytes.TrimPrefix(raw, []byte("---\n")))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var crd struct {
		Kind string `json:"kind"`
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema json.RawMessage `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(js, &crd); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if crd.Kind != "CustomResourceDefinition" {
		return nil, fmt.Errorf("%s: a %q, want a CustomResourceDefinition", path, crd.Kind)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != version {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(v.Schema.OpenAPIV3Schema))
		dec.DisallowUnknownFields()
		var s schema
		if err := dec.Decode(&s); err != nil {
			return nil, fmt.Errorf("%s, version %s: %w", path, version, err)
		}
		return &s, nil
	}
	return nil, fmt.Errorf("%s: no version %s", path, version)
}

// validateCR checks a custom resource (YAML) against its CRD's schema the
// way the API server does before storing it: metadata as Kubernetes'
// ObjectMeta, everything else by the schema, where a field the schema does
// not name is an error (the API server would prune it without a word, which
// hides a typo just as well).
func validateCR(s *schema, raw []byte) []error {
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return []error{err}
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return []error{err}
	}
	var errs []error
	if meta, ok := obj["metadata"]; ok {
		b, _ := json.Marshal(meta)
		var om metav1.ObjectMeta
		strict, err := kjson.UnmarshalStrict(b, &om)
		if err != nil {
			errs = append(errs, fmt.Errorf("metadata: %w", err))
		}
		for _, e := range strict {
			errs = append(errs, fmt.Errorf("metadata: %w", e))
		}
		delete(obj, "metadata")
	}
	var walk func(s *schema, v any, path string)
	fail := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	walk = func(s *schema, v any, path string) {
		if v == nil {
			fail(path, "null is not allowed")
			return
		}
		if s.IntOrString {
			switch v.(type) {
			case string, json.Number:
			default:
				fail(path, "want an integer or a string, got %T", v)
			}
			return
		}
		switch s.Type {
		case "object":
			m, ok := v.(map[string]any)
			if !ok {
				fail(path, "want an object, got %T", v)
				return
			}
			for _, name := range s.Required {
				if _, ok := m[name]; !ok {
					fail(path, "required field %q is missing", name)
				}
			}
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				child := join(path, k)
				switch {
				case s.Properties[k] != nil:
					walk(s.Properties[k], m[k], child)
				case s.AdditionalProperties != nil:
					walk(s.AdditionalProperties, m[k], child)
				case s.PreserveUnknown:
				default:
					fail(child, "unknown field")
				}
			}
		case "array":
			a, ok := v.([]any)
			if !ok {
				fail(path, "want an array, got %T", v)
				return
			}
			if s.ListType != "" && s.ListType != "atomic" {
				fail(path, "the schema's list type %q is not understood by this validator", s.ListType)
			}
			for i, item := range a {
				walk(s.Items, item, fmt.Sprintf("%s[%d]", path, i))
			}
		case "string":
			str, ok := v.(string)
			if !ok {
				fail(path, "want a string, got %T %v", v, v)
				return
			}
			if len(s.Enum) > 0 && !slices.Contains(s.Enum, any(str)) {
				fail(path, "%q is not one of %v", str, s.Enum)
			}
		case "integer":
			n, ok := v.(json.Number)
			if !ok {
				fail(path, "want an integer, got %T %v", v, v)
				return
			}
			i, err := n.Int64()
			if err != nil {
				fail(path, "want an integer, got %s", n)
				return
			}
			if s.Format == "int32" && (i < math.MinInt32 || i > math.MaxInt32) {
				fail(path, "%d does not fit in int32", i)
			}
		case "number":
			if _, ok := v.(json.Number); !ok {
				fail(path, "want a number, got %T %v", v, v)
			}
		case "boolean":
			if _, ok := v.(bool); !ok {
				fail(path, "want true or false, got %T %v", v, v)
			}
		default:
			fail(path, "the schema has no type %q here", s.Type)
		}
	}
	walk(s, obj, "")
	return errs
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// errorsText is every error on its own line, for matching and messages.
func errorsText(errs []error) string {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}
