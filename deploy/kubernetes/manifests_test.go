// Package kubernetes_test checks the manifests beside it offline: no
// cluster, no network. Kubernetes objects are decoded strictly into the real
// k8s.io/api types (unknown or misspelt fields, wrong apiVersions fail),
// KEDA's objects are walked against KEDA's CRD schemas (testdata/keda), and
// the objects are checked against each other, against errand's own
// configuration and against docker-compose.yml. query_test.go runs the
// scaler's query on a migrated database.
package kubernetes_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kserializer "k8s.io/apimachinery/pkg/runtime/serializer/json"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/internal/config"
)

// The manifests `kubectl apply -k deploy/kubernetes` applies (and
// kustomization.yaml lists).
var manifestFiles = []string{"migrate-job.yaml", "deployment.yaml", "pdb.yaml", "keda.yaml"}

const kedaAPIVersion = "keda.sh/v1alpha1"

// shutdownSteps is what `errand run` may take on SIGTERM after
// ERRAND_SHUTDOWN_TIMEOUT: up to 10s to cancel the remaining jobs back to
// pending, then up to 5s to retire the replica and close its pool
// (internal/daemon/engine.go, shutdown and close).
const shutdownSteps = 15 * time.Second

// doc is one YAML document of a manifest file.
type doc struct {
	file       string
	raw        []byte
	apiVersion string
	kind       string
}

func (d doc) String() string { return fmt.Sprintf("%s (%s %s)", d.file, d.apiVersion, d.kind) }

// splitDocs splits a file into its YAML documents as kubectl does, leaving
// out documents with nothing but comments.
func splitDocs(file string, raw []byte) ([]doc, error) {
	r := kyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var docs []doc
	for {
		b, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(b, &tm); err != nil {
			return nil, fmt.Errorf("%s: does not parse: %w", file, err)
		}
		js, err := yaml.YAMLToJSON(b)
		if err != nil {
			return nil, fmt.Errorf("%s: does not parse: %w", file, err)
		}
		if string(js) == "null" {
			continue
		}
		docs = append(docs, doc{file: file, raw: b, apiVersion: tm.APIVersion, kind: tm.Kind})
	}
}

// readManifests reads the manifests, with edit (if not nil) applied to each
// file's text first.
func readManifests(t *testing.T, edit func(file, text string) string) []doc {
	t.Helper()
	var docs []doc
	for _, f := range manifestFiles {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			raw = []byte(edit(f, string(raw)))
		}
		d, err := splitDocs(f, raw)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d...)
	}
	return docs
}

// The KEDA objects, as far as the cross-checks read them (the schema has
// checked every field already).
type scaledObject struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Triggers        []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
				Kind string `json:"kind"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

type triggerAuthentication struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

// manifests is every object, decoded.
type manifests struct {
	deploy *appsv1.Deployment
	pdb    *policyv1.PodDisruptionBudget
	job    *batchv1.Job
	so     *scaledObject
	ta     *triggerAuthentication
}

// decoder decodes strictly into the registered k8s.io/api types, as the API
// server does with fieldValidation=Strict (kubectl's default): an unknown or
// duplicate field, or an apiVersion the kind does not have, is an error.
func decoder() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return kserializer.NewSerializerWithOptions(kserializer.DefaultMetaFactory, scheme, scheme,
		kserializer.SerializerOptions{Yaml: true, Strict: true})
}

// decode turns every document into its object. Each kind must appear once.
func decode(t *testing.T, docs []doc) (manifests, []error) {
	t.Helper()
	soSchema, err := loadCRDSchema("testdata/keda/keda.sh_scaledobjects.yaml", "v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	taSchema, err := loadCRDSchema("testdata/keda/keda.sh_triggerauthentications.yaml", "v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	dec := decoder()
	var m manifests
	var errs []error
	seen := map[string]bool{}
	for _, d := range docs {
		if seen[d.kind] {
			errs = append(errs, fmt.Errorf("%s: a second %s; these manifests have one of each", d, d.kind))
			continue
		}
		seen[d.kind] = true
		fail := func(err error) { errs = append(errs, fmt.Errorf("%s: %w", d, err)) }
		switch d.kind {
		case "Deployment", "PodDisruptionBudget", "Job":
			obj, _, err := dec.Decode(d.raw, nil, nil)
			if err != nil {
				fail(err)
				continue
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				m.deploy = o
			case *policyv1.PodDisruptionBudget:
				m.pdb = o
			case *batchv1.Job:
				m.job = o
			}
		case "ScaledObject", "TriggerAuthentication":
			if d.apiVersion != kedaAPIVersion {
				fail(fmt.Errorf("KEDA 2 serves %s as apiVersion %s", d.kind, kedaAPIVersion))
				continue
			}
			s, target := soSchema, any(&m.so)
			if d.kind == "TriggerAuthentication" {
				s, target = taSchema, &m.ta
			}
			if verrs := validateCR(s, d.raw); len(verrs) > 0 {
				for _, e := range verrs {
					fail(e)
				}
				continue
			}
			if err := yaml.Unmarshal(d.raw, target); err != nil {
				fail(err)
			}
		default:
			fail(errors.New("not a kind these manifests use"))
		}
	}
	return m, errs
}

// crossCheck checks the objects against each other and against errand.
func crossCheck(m manifests) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if m.deploy == nil || m.pdb == nil || m.job == nil || m.so == nil || m.ta == nil {
		fail("missing objects: want a Deployment, a PodDisruptionBudget, a Job, a ScaledObject and a TriggerAuthentication")
		return errs
	}
	d, pod := m.deploy, m.deploy.Spec.Template
	if len(pod.Spec.Containers) != 1 || len(m.job.Spec.Template.Spec.Containers) != 1 {
		fail("want one container in the Deployment and in the Job")
		return errs
	}
	c := pod.Spec.Containers[0]
	env := containerEnv(c)

	// The Deployment's own selector must select its pods (the API server
	// refuses it otherwise).
	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
		fail("Deployment: spec.selector %v does not select its own pod template's labels %v", d.Spec.Selector, pod.Labels)
	}
	if d.Spec.Replicas != nil {
		fail("Deployment: spec.replicas is set; the ScaledObject's HPA owns the replica count, and every apply would reset it")
	}

	// The PodDisruptionBudget covers the workers, and only them.
	sel, err := metav1.LabelSelectorAsSelector(m.pdb.Spec.Selector)
	switch {
	case err != nil:
		fail("PodDisruptionBudget: selector: %v", err)
	case sel.Empty():
		fail("PodDisruptionBudget: an empty selector matches every pod in the namespace")
	case !sel.Matches(labels.Set(pod.Labels)):
		fail("PodDisruptionBudget: selector %s matches no pod of Deployment %s (labels %v)", sel, d.Name, pod.Labels)
	case sel.Matches(labels.Set(m.job.Spec.Template.Labels)):
		fail("PodDisruptionBudget: selector %s also matches the migration Job's pods", sel)
	}
	minReplicas, maxReplicas := int32(1), int32(100) // KEDA's defaults with a minimum above zero
	if m.so.Spec.MinReplicaCount != nil {
		minReplicas = *m.so.Spec.MinReplicaCount
	}
	if m.so.Spec.MaxReplicaCount != nil {
		maxReplicas = *m.so.Spec.MaxReplicaCount
	}
	if mu := m.pdb.Spec.MaxUnavailable; mu == nil || mu.IntValue() < 1 || int32(mu.IntValue()) >= minReplicas {
		fail("PodDisruptionBudget: want maxUnavailable from 1 to below minReplicaCount (%d), so a drain proceeds and a replica keeps working; got %v", minReplicas, mu)
	}

	// Shutdown: the kubelet's SIGKILL comes after everything `errand run`
	// may do on SIGTERM.
	timeout, err := time.ParseDuration(cmpOr(env["ERRAND_SHUTDOWN_TIMEOUT"], "30s"))
	if err != nil {
		fail("Deployment: ERRAND_SHUTDOWN_TIMEOUT: %v", err)
	}
	grace := time.Duration(ptrOr(pod.Spec.TerminationGracePeriodSeconds, corev1.DefaultTerminationGracePeriodSeconds)) * time.Second
	if grace <= timeout+shutdownSteps {
		fail("Deployment: terminationGracePeriodSeconds (%s) must be above ERRAND_SHUTDOWN_TIMEOUT (%s) plus the %s that cancelling and retiring may take",
			grace, timeout, shutdownSteps)
	}

	// Probes reach errand's HTTP server: its port, not loopback.
	host, port, err := net.SplitHostPort(cmpOr(env["ERRAND_HTTP_ADDR"], "127.0.0.1:8080"))
	if err != nil {
		fail("Deployment: ERRAND_HTTP_ADDR: %v", err)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		fail("Deployment: ERRAND_HTTP_ADDR %s listens on loopback; the kubelet probes the pod's address", env["ERRAND_HTTP_ADDR"])
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"startupProbe", c.StartupProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			fail("Deployment: no %s with httpGet", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			fail("Deployment: %s asks %s, want %s", p.name, p.probe.HTTPGet.Path, p.path)
		}
		probePort := p.probe.HTTPGet.Port.String()
		for _, cp := range c.Ports {
			if cp.Name != "" && cp.Name == probePort {
				probePort = strconv.Itoa(int(cp.ContainerPort))
			}
		}
		if probePort != port {
			fail("Deployment: %s probes port %s, but ERRAND_HTTP_ADDR is %s", p.name, probePort, env["ERRAND_HTTP_ADDR"])
		}
	}

	// errand itself accepts the environment, and every ERRAND_ variable is
	// one it reads (it ignores a misspelt one).
	help := config.Help(errand.Builtin())
	for _, w := range []struct {
		what string
		c    corev1.Container
		args string
	}{{"Deployment", c, "run"}, {"Job", m.job.Spec.Template.Spec.Containers[0], "migrate"}} {
		if got := strings.Join(w.c.Args, " "); got != w.args || len(w.c.Command) > 0 {
			fail("%s: runs %q %q, want the image's entrypoint with args %q", w.what, w.c.Command, got, w.args)
		}
		e := containerEnv(w.c)
		for name := range e {
			if strings.HasPrefix(name, "ERRAND_") && !strings.Contains(help, "  "+name+" ") {
				fail("%s: %s is not a variable errand reads (errand help)", w.what, name)
			}
		}
		if _, err := config.Load(func(k string) string { return e[k] }, errand.Builtin()); err != nil {
			fail("%s: errand refuses its environment: %v", w.what, err)
		}
		if !strings.HasPrefix(e["DATABASE_URL"], "postgres://") {
			fail("%s: DATABASE_URL does not come from a Secret", w.what)
		}
		if w.c.Image != c.Image {
			fail("Job: image %s, but the Deployment runs %s", w.c.Image, c.Image)
		}
		if w.c.Resources.Requests.Memory().IsZero() || w.c.Resources.Limits.Memory().IsZero() || w.c.Resources.Requests.Cpu().IsZero() {
			fail("%s: want cpu and memory requests and a memory limit", w.what)
		}
	}
	for name, v := range containerEnv(m.job.Spec.Template.Spec.Containers[0]) {
		if env[name] != v {
			fail("Job: %s differs from the Deployment's", name)
		}
	}
	if env["RESEND_API_KEY"] != "" && env["ERRAND_EMAIL_FROM"] == "" {
		fail("Deployment: RESEND_API_KEY without ERRAND_EMAIL_FROM: errand run refuses to start")
	}
	if env["RESEND_API_KEY"] == "" && env["ERRAND_EMAIL_CAPTURE"] != "true" {
		fail("Deployment: neither RESEND_API_KEY nor ERRAND_EMAIL_CAPTURE=true: errand run refuses to start")
	}

	// Non-root, as the Dockerfile's distroless :nonroot image (uid 65532).
	for _, w := range []struct {
		what string
		pod  corev1.PodSpec
	}{{"Deployment", pod.Spec}, {"Job", m.job.Spec.Template.Spec}} {
		psc, csc := w.pod.SecurityContext, w.pod.Containers[0].SecurityContext
		if !(psc != nil && ptrOr(psc.RunAsNonRoot, false)) && !(csc != nil && ptrOr(csc.RunAsNonRoot, false)) {
			fail("%s: runAsNonRoot is not set", w.what)
		}
		if psc == nil || ptrOr(psc.RunAsUser, 0) != 65532 {
			fail("%s: want runAsUser 65532, the distroless nonroot user", w.what)
		}
		if csc == nil || ptrOr(csc.AllowPrivilegeEscalation, true) {
			fail("%s: allowPrivilegeEscalation is not false", w.what)
		}
	}

	// The ScaledObject scales this Deployment, with this authentication.
	ref := m.so.Spec.ScaleTargetRef
	if ref.Name != d.Name || cmpOr(ref.Kind, "Deployment") != "Deployment" || cmpOr(ref.APIVersion, "apps/v1") != "apps/v1" {
		fail("ScaledObject: scaleTargetRef %s %s %q is not Deployment %q", ref.APIVersion, ref.Kind, ref.Name, d.Name)
	}
	if minReplicas < 1 || minReplicas > maxReplicas {
		fail("ScaledObject: want 1 <= minReplicaCount (%d) <= maxReplicaCount (%d); errand does not scale to zero", minReplicas, maxReplicas)
	}
	if len(m.so.Spec.Triggers) != 1 || m.so.Spec.Triggers[0].Type != "postgresql" {
		fail("ScaledObject: want one postgresql trigger")
		return errs
	}
	tr := m.so.Spec.Triggers[0]
	if tr.AuthenticationRef == nil || tr.AuthenticationRef.Name != m.ta.Metadata.Name || cmpOr(tr.AuthenticationRef.Kind, "TriggerAuthentication") != "TriggerAuthentication" {
		fail("ScaledObject: the trigger's authenticationRef does not name TriggerAuthentication %q", m.ta.Metadata.Name)
	}
	target, err := strconv.ParseFloat(tr.Metadata["targetQueryValue"], 64)
	if err != nil || target <= 0 {
		fail("ScaledObject: targetQueryValue %q: KEDA wants a number above 0", tr.Metadata["targetQueryValue"])
	}
	query := tr.Metadata["query"]
	if strings.Contains(query, "$") {
		fail("ScaledObject: the query has a parameter; KEDA passes none")
	}
	if c, ok := queryCap(query); ok {
		if limit, _ := strconv.ParseFloat(c, 64); limit < float64(maxReplicas)*target {
			fail("ScaledObject: the query's limit %s caps the count below maxReplicaCount x targetQueryValue (%d x %g): the top replicas are never reached",
				c, maxReplicas, target)
		}
	}
	// KEDA's scaler needs a connection string, or host, port, userName,
	// dbName and sslmode (from the TriggerAuthentication or the trigger's
	// metadata) and a password.
	params := map[string]bool{}
	for k := range tr.Metadata {
		params[k] = true
	}
	for _, r := range m.ta.Spec.SecretTargetRef {
		params[r.Parameter] = true
	}
	if !params["connection"] && !params["connectionFromEnv"] {
		for _, p := range []string{"host", "port", "userName", "dbName", "sslmode", "password"} {
			if !params[p] {
				fail("TriggerAuthentication: no %s for KEDA's postgresql scaler", p)
			}
		}
	}
	return errs
}

// containerEnv is a container's environment, with values from Secrets
// replaced by stand-ins of the right shape.
func containerEnv(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			v = "secret:" + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
			if e.Name == "DATABASE_URL" {
				v = "postgres://" + e.ValueFrom.SecretKeyRef.Name + "@secret/" + e.ValueFrom.SecretKeyRef.Key
			}
		}
		env[e.Name] = v
	}
	return env
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func TestManifestsAreValidAndAgree(t *testing.T) {
	m, errs := decode(t, readManifests(t, nil))
	if len(errs) > 0 {
		t.Fatalf("the manifests do not decode:\n%s", errorsText(errs))
	}
	if errs := crossCheck(m); len(errs) > 0 {
		t.Errorf("the manifests do not agree:\n%s", errorsText(errs))
	}
}

// Each mistake the checks exist for is caught: a bad manifest from
// testdata/bad in place of the real one of its kind, or one edit to a real
// file.
func TestManifestMistakesAreCaught(t *testing.T) {
	replace := func(file string) func(t *testing.T) []doc {
		return func(t *testing.T) []doc {
			raw, err := os.ReadFile(filepath.Join("testdata/bad", file))
			if err != nil {
				t.Fatal(err)
			}
			bad, err := splitDocs(file, raw)
			if err != nil || len(bad) != 1 {
				t.Fatalf("%s: want one document: %v", file, err)
			}
			docs := readManifests(t, nil)
			for i := range docs {
				if docs[i].kind == bad[0].kind {
					docs[i] = bad[0]
				}
			}
			return docs
		}
	}
	edit := func(file, old, new string) func(t *testing.T) []doc {
		return func(t *testing.T) []doc {
			return readManifests(t, func(f, text string) string {
				if f != file {
					return text
				}
				if !strings.Contains(text, old) {
					t.Fatalf("%s no longer contains %q: update this case", f, old)
				}
				return strings.Replace(text, old, new, 1)
			})
		}
	}
	cases := []struct {
		name string
		docs func(t *testing.T) []doc
		want string
	}{
		{"a misspelt field in a PodDisruptionBudget", replace("pdb-unknown-field.yaml"), `unknown field "spec.selector.matchLabel"`},
		{"a misspelt field deep in a Deployment", edit("deployment.yaml", "containerPort: 8080", "contianerPort: 8080"), `unknown field "spec.template.spec.containers[0].ports[0].contianerPort"`},
		{"a field of another object in a Job", edit("migrate-job.yaml", "  backoffLimit: 4", "  backoffLimit: 4\n  replicas: 1"), `unknown field "spec.replicas"`},
		{"the HPA's field name in a ScaledObject", replace("scaledobject-unknown-field.yaml"), "spec.minReplicas: unknown field"},
		{"a misspelt trigger field in a ScaledObject", edit("keda.yaml", "useCachedMetrics: true", "useCachedMetric: true"), "spec.triggers[0].useCachedMetric: unknown field"},
		{"a number where KEDA wants a string", edit("keda.yaml", `targetQueryValue: "100"`, `targetQueryValue: 100`), "spec.triggers[0].metadata.targetQueryValue: want a string"},
		{"a TriggerAuthentication ref without its key", edit("keda.yaml", "      key: password\n", ""), `spec.secretTargetRef[4]: required field "key" is missing`},
		{"a misspelt metadata field in a KEDA object", edit("keda.yaml", "  labels:\n    app.kubernetes.io/name: errand\n    app.kubernetes.io/component: worker\nspec:\n  scaleTargetRef", "  label:\n    app.kubernetes.io/name: errand\nspec:\n  scaleTargetRef"), `metadata: unknown field "label"`},
		{"a PodDisruptionBudget apiVersion removed in Kubernetes 1.25", replace("pdb-wrong-apiversion.yaml"), `no kind "PodDisruptionBudget" is registered for version "policy/v1beta1"`},
		{"a Deployment on extensions/v1beta1", edit("deployment.yaml", "apiVersion: apps/v1\nkind: Deployment", "apiVersion: extensions/v1beta1\nkind: Deployment"), `no kind "Deployment" is registered for version "extensions/v1beta1"`},
		{"KEDA 1's apiVersion on a ScaledObject", replace("scaledobject-wrong-apiversion.yaml"), "KEDA 2 serves ScaledObject as apiVersion keda.sh/v1alpha1"},
		{"a PodDisruptionBudget selecting no errand pod", replace("pdb-selects-nothing.yaml"), "matches no pod of Deployment errand"},
		{"a PodDisruptionBudget selecting the migration too", edit("pdb.yaml", "      app.kubernetes.io/component: worker\n", ""), "also matches the migration Job's pods"},
		{"a ScaledObject scaling another Deployment", edit("keda.yaml", "    name: errand\n  # Never zero", "    name: errand-worker\n  # Never zero"), `scaleTargetRef apps/v1 Deployment "errand-worker" is not Deployment "errand"`},
		{"a trigger naming another TriggerAuthentication", edit("keda.yaml", "name: errand-keda\n---", "name: errand-db\n---"), `does not name TriggerAuthentication "errand-keda"`},
		{"a grace period the shutdown outlasts", edit("deployment.yaml", "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 30"), "terminationGracePeriodSeconds (30s) must be above ERRAND_SHUTDOWN_TIMEOUT (30s)"},
		{"a longer shutdown timeout without a longer grace period", edit("deployment.yaml", `value: "30s"`, `value: "1m"`), "must be above ERRAND_SHUTDOWN_TIMEOUT (1m0s)"},
		{"probes on another port than ERRAND_HTTP_ADDR", edit("deployment.yaml", `value: "0.0.0.0:8080"`, `value: "0.0.0.0:9090"`), "readinessProbe probes port 8080, but ERRAND_HTTP_ADDR is 0.0.0.0:9090"},
		{"errand listening on loopback only", edit("deployment.yaml", `value: "0.0.0.0:8080"`, `value: "127.0.0.1:8080"`), "listens on loopback"},
		{"readiness on the liveness endpoint", edit("deployment.yaml", "path: /readyz", "path: /healthz"), "readinessProbe asks /healthz, want /readyz"},
		{"a misspelt errand variable", edit("deployment.yaml", "name: ERRAND_SHUTDOWN_TIMEOUT", "name: ERRAND_SHUTDOWN_TIMOUT"), "ERRAND_SHUTDOWN_TIMOUT is not a variable errand reads"},
		{"a queue errand does not have", edit("deployment.yaml", "default=50", "defualt=50"), `errand refuses its environment: ERRAND_QUEUES`},
		{"Resend without a sender", edit("deployment.yaml", "            - name: ERRAND_EMAIL_FROM\n              value: \"Example <notifications@example.com>\" # your verified Resend sender\n", ""), "RESEND_API_KEY without ERRAND_EMAIL_FROM"},
		{"a fixed replica count fighting the HPA", edit("deployment.yaml", "  revisionHistoryLimit: 5", "  replicas: 2\n  revisionHistoryLimit: 5"), "spec.replicas is set"},
		{"scaling to zero", edit("keda.yaml", "minReplicaCount: 2", "minReplicaCount: 0"), "errand does not scale to zero"},
		{"a PodDisruptionBudget that blocks every drain at the floor", edit("pdb.yaml", "maxUnavailable: 1", "maxUnavailable: 2"), "want maxUnavailable from 1 to below minReplicaCount (2)"},
		{"more replicas than the query's cap can ask for", edit("keda.yaml", "maxReplicaCount: 6", "maxReplicaCount: 10"), "caps the count below maxReplicaCount x targetQueryValue (10 x 100)"},
		{"a TriggerAuthentication without a password", edit("keda.yaml", "    - parameter: password\n      name: errand-keda\n      key: password\n", ""), "no password for KEDA's postgresql scaler"},
		{"a migration Job on another image", edit("migrate-job.yaml", "image: errand", "image: errand:old"), "Job: image errand:old, but the Deployment runs errand"},
		{"the migration running as root", edit("migrate-job.yaml", "runAsNonRoot: true\n        runAsUser: 65532", "runAsNonRoot: false\n        runAsUser: 0"), "Job: runAsNonRoot is not set"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, errs := decode(t, tc.docs(t))
			if len(errs) == 0 {
				errs = crossCheck(m)
			}
			if got := errorsText(errs); !strings.Contains(got, tc.want) {
				t.Errorf("want an error containing %q, got:\n%s", tc.want, got)
			}
		})
	}
}

// kustomization.yaml applies every manifest, and only the fields written
// here (a small strict struct: kustomize's own types are a large module).
func TestKustomizationAppliesEveryManifest(t *testing.T) {
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
		Images     []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is %s %s", k.APIVersion, k.Kind)
	}
	yamls, _ := filepath.Glob("*.yaml")
	yamls = slices.DeleteFunc(yamls, func(f string) bool { return f == "kustomization.yaml" })
	slices.Sort(yamls)
	res := slices.Sorted(slices.Values(k.Resources))
	mf := slices.Sorted(slices.Values(manifestFiles))
	if !slices.Equal(res, yamls) || !slices.Equal(res, mf) {
		t.Errorf("kustomization.yaml resources %v; the directory has %v; the tests read %v", res, yamls, mf)
	}
	m, errs := decode(t, readManifests(t, nil))
	if len(errs) > 0 {
		t.Fatal(errorsText(errs))
	}
	if len(k.Images) != 1 || k.Images[0].Name != m.deploy.Spec.Template.Spec.Containers[0].Image || k.Images[0].NewName == "" {
		t.Errorf("kustomization.yaml images %+v do not set the manifests' image %q", k.Images, m.deploy.Spec.Template.Spec.Containers[0].Image)
	}
}

// docker-compose.yml runs the same replicas: the same configuration, a stop
// grace period past the same shutdown, and the same image (the Dockerfile).
func TestComposeFileKeepsInStep(t *testing.T) {
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Environment      map[string]string `json:"environment"`
			StopGracePeriod  string            `json:"stop_grace_period"`
			Command          []string          `json:"command"`
			DeployedReplicas struct {
				Replicas int `json:"replicas"`
			} `json:"deploy"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	m, errs := decode(t, readManifests(t, nil))
	if len(errs) > 0 {
		t.Fatal(errorsText(errs))
	}
	k8s := containerEnv(m.deploy.Spec.Template.Spec.Containers[0])
	compose := f.Services["errand"].Environment
	// Email differs on purpose: compose takes Resend's key from the shell
	// (or captures, with its overlay), Kubernetes from a Secret.
	emailOnly := []string{"RESEND_API_KEY", "ERRAND_EMAIL_FROM", "ERRAND_EMAIL_CAPTURE"}
	for _, env := range []map[string]string{k8s, compose} {
		for name := range env {
			if name == "DATABASE_URL" || slices.Contains(emailOnly, name) {
				continue
			}
			if k8s[name] != compose[name] {
				t.Errorf("%s: Kubernetes %q, docker compose %q", name, k8s[name], compose[name])
			}
		}
	}
	timeout, err := time.ParseDuration(cmpOr(compose["ERRAND_SHUTDOWN_TIMEOUT"], "30s"))
	if err != nil {
		t.Fatal(err)
	}
	if stop, err := time.ParseDuration(f.Services["errand"].StopGracePeriod); err != nil || stop <= timeout+shutdownSteps {
		t.Errorf("docker compose: stop_grace_period %q must be above ERRAND_SHUTDOWN_TIMEOUT (%s) plus %s", f.Services["errand"].StopGracePeriod, timeout, shutdownSteps)
	}
	if cmd := strings.Join(f.Services["migrate"].Command, " "); cmd != strings.Join(m.job.Spec.Template.Spec.Containers[0].Args, " ") {
		t.Errorf("docker compose migrates with %q, Kubernetes with %q", cmd, m.job.Spec.Template.Spec.Containers[0].Args)
	}
	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^FROM gcr\.io/distroless/[a-z0-9-]+:nonroot\s*$`).Match(dockerfile) {
		t.Error("the Dockerfile's final image is no longer distroless :nonroot (uid 65532), which the manifests' runAsUser assume")
	}
	if !bytes.Contains(dockerfile, []byte(`ENTRYPOINT ["/usr/local/bin/errand"]`)) {
		t.Error("the Dockerfile's entrypoint is no longer errand, which the manifests' args assume")
	}
}

// docs/kubernetes.md tells how to create every Secret key the manifests
// read.
func TestDocsNameEverySecretKey(t *testing.T) {
	raw, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	docs := string(raw)
	m, errs := decode(t, readManifests(t, nil))
	if len(errs) > 0 {
		t.Fatal(errorsText(errs))
	}
	refs := map[string][]string{}
	for _, c := range []corev1.Container{m.deploy.Spec.Template.Spec.Containers[0], m.job.Spec.Template.Spec.Containers[0]} {
		for _, e := range c.Env {
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
				refs[r.SecretKeyRef.Name] = append(refs[r.SecretKeyRef.Name], r.SecretKeyRef.Key)
			}
		}
	}
	for _, r := range m.ta.Spec.SecretTargetRef {
		refs[r.Name] = append(refs[r.Name], r.Key)
	}
	for name, keys := range refs {
		create := regexp.MustCompile(`kubectl create secret generic ` + regexp.QuoteMeta(name) + `\s(?:[^\n]*\\\n)*[^\n]*`).FindString(docs)
		if create == "" {
			t.Errorf("docs/kubernetes.md does not create Secret %s", name)
			continue
		}
		for _, k := range keys {
			if !strings.Contains(create, "--from-literal="+k+"=") {
				t.Errorf("docs/kubernetes.md creates Secret %s without key %s", name, k)
			}
		}
	}
}

// queryCap is the most the scaler's query counts: errand.startable_jobs'
// limit, or a LIMIT.
func queryCap(query string) (string, bool) {
	m := regexp.MustCompile(`(?i)(?:\bstartable_jobs\s*\(\s*|\bLIMIT\s+)(\d+)`).FindStringSubmatch(query)
	if m == nil {
		return "", false
	}
	return m[1], true
}
