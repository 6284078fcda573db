package render

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func load(t *testing.T, fsys fstest.MapFS) *Desired {
	t.Helper()
	d, err := Load(context.Background(), fsys, Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return d
}

func diagStrings(ds Diagnostics) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	return out
}

func wantDiag(t *testing.T, d *Desired, want string) {
	t.Helper()
	for _, s := range diagStrings(d.Diagnostics) {
		if strings.Contains(s, want) {
			return
		}
	}
	t.Errorf("no diagnostic contains %q; got:\n%s", want, strings.Join(diagStrings(d.Diagnostics), "\n"))
}

func TestDecodeErrorsCarryPositions(t *testing.T) {
	d := load(t, fstest.MapFS{"apps/web.yaml": {Data: []byte(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: "3"
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
        imagePolicy: Always
        resources:
          requests: {cpu: 10x}
`)}})
	wantDiag(t, d, `apps/web.yaml:6:13: error: Deployment default/web: spec.replicas: expected an integer, got a string "3"`)
	wantDiag(t, d, `apps/web.yaml:16:9: error: Deployment default/web: spec.template.spec.containers[0].imagePolicy: unknown field "imagePolicy"`)
	wantDiag(t, d, `apps/web.yaml:18:27: error: Deployment default/web: spec.template.spec.containers[0].resources.requests[cpu]: invalid value "10x"`)
	if len(d.Objects) != 0 {
		t.Errorf("a document with decode errors must not become an object, got %d", len(d.Objects))
	}
}

func TestDecodeStrictness(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"duplicate key", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n", `metadata.name: duplicate field "name"`},
		{"number for string", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  port: 80\n", `data[port]: expected a string, got an integer 80 (quote it: "80")`},
		{"list for map", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: [a]\n", "data: expected a mapping, got a list"},
		{"bad base64", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  x: '!!'\n", "data[x]: invalid base64 data"},
		{"unknown kind", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", `unknown kind "Widget" in apiVersion "example.com/v1"; list it in the Cluster's spec.ignoreKinds`},
		{"wrong apiVersion", "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: w}\n", "berth knows it as apps/v1 Deployment"},
		{"no kind", "apiVersion: v1\nmetadata: {name: w}\n", "missing kind"},
		{"not a mapping", "- a\n- b\n", "a manifest must be a mapping"},
		{"malformed", "apiVersion: v1\nkind: [\n", "x.yaml:2:1: error: malformed YAML"},
		{"int overflow", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  replicas: 99999999999\n", "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantDiag(t, load(t, fstest.MapFS{"x.yaml": {Data: []byte(tc.doc)}}), tc.want)
		})
	}
}

func TestIgnoredKindsAreNotes(t *testing.T) {
	d := load(t, fstest.MapFS{
		"cluster.yaml": {Data: []byte("apiVersion: berth.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  ignoreKinds:\n  - {apiVersion: monitoring.coreos.com/v1, kind: ServiceMonitor}\n")},
		"mon.yaml":     {Data: []byte("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: m}\nspec: {}\n")},
	})
	if d.Diagnostics.HasErrors() {
		t.Fatalf("unexpected errors: %v", diagStrings(d.Diagnostics))
	}
	wantDiag(t, d, "mon.yaml:2:7: note: kind: monitoring.coreos.com/v1 ServiceMonitor skipped")
}

func TestDuplicatesNameBothPlaces(t *testing.T) {
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"
	d := load(t, fstest.MapFS{"a.yaml": {Data: []byte(cm)}, "b.yaml": {Data: []byte("# x\n" + cm)}})
	wantDiag(t, d, "b.yaml:5:3: error: ConfigMap default/a: declared twice: also at a.yaml:1:1")
}

func TestPositionsAndNamespaces(t *testing.T) {
	d := load(t, fstest.MapFS{"p.yaml": {Data: []byte("---\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox\n")}})
	o := d.Get(Key{Kind: "Pod", Namespace: "default", Name: "p"})
	if o == nil {
		t.Fatalf("pod not loaded: %v", diagStrings(d.Diagnostics))
	}
	if got := o.FieldPos("spec.containers[0].image").String(); got != "p.yaml:10:5" {
		t.Errorf("image at %s", got)
	}
	if got := o.FieldPos("spec.containers[0].ports[0].containerPort").String(); got != "p.yaml:9:5" {
		t.Errorf("missing field falls back to nearest ancestor, got %s", got)
	}
	if _, ok := o.Obj.(*corev1.Pod); !ok {
		t.Errorf("Obj is %T", o.Obj)
	}
}

func TestParentPath(t *testing.T) {
	for in, want := range map[string]string{
		"a.b[0].c":             "a.b[0]",
		"a.b[0]":               "a.b",
		"metadata.labels[a.b]": "metadata.labels",
		"a":                    "",
	} {
		if got := ParentPath(in); got != want {
			t.Errorf("ParentPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// The hostile inputs below must be refused quickly, with bounded memory,
// reading nothing outside the repository.

const aliasBomb = `apiVersion: v1
kind: ConfigMap
metadata:
  name: lol
  annotations:
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
`

func TestHostileAliasBomb(t *testing.T) {
	start := time.Now()
	d := load(t, fstest.MapFS{"bomb.yaml": {Data: []byte(aliasBomb)}})
	if len(d.Objects) != 0 || !d.Diagnostics.HasErrors() {
		t.Fatalf("alias bomb was not refused: %v", diagStrings(d.Diagnostics))
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("refusing the alias bomb took %v", el)
	}
	// The annotations are strings, so the decoder refuses the list shape at
	// once; the same bomb in a free-form field must hit the node budget.
	free := strings.Replace(aliasBomb, "kind: ConfigMap", "kind: Cluster", 1)
	free = strings.Replace(free, "apiVersion: v1", "apiVersion: berth.dev/v1alpha1", 1)
	free = strings.Replace(free, "  annotations:", "  labels:", 1)
	d = load(t, fstest.MapFS{"bomb.yaml": {Data: []byte(free)}})
	if !d.Diagnostics.HasErrors() {
		t.Fatalf("alias bomb was not refused")
	}
}

func TestHostileAliasBombBudget(t *testing.T) {
	// A bomb in a field that takes arbitrary JSON (RawExtension-like) goes
	// through toAny; use an intstr field via expansion inside a list the
	// type accepts: container args.
	doc := `apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: busybox
    args: &a [x, x, x, x, x, x, x, x, x, x]
  - &b {name: d, image: busybox, args: *a}
`
	d, err := Load(context.Background(), fstest.MapFS{"p.yaml": {Data: []byte(doc)}}, Options{MaxNodes: 20})
	if err != nil {
		t.Fatal(err)
	}
	wantDiag(t, d, "document too large after expanding aliases (over 20 YAML nodes; an alias bomb?)")
}

func TestHostileHugeFile(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "huge.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(100 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	d, err := Load(context.Background(), root.FS(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	wantDiag(t, d, "huge.yaml: error: file is 100.0 MiB, over the 8.0 MiB limit for a manifest; not read")
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("refusing a 100 MB file allocated %d bytes", grew)
	}
}

func TestHostileSymlinkOutOfRepository(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret.yaml")
	if err := os.WriteFile(secret, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(secret, filepath.Join(dir, "abs.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../"+filepath.Base(outside)+"/secret.yaml", filepath.Join(dir, "rel.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "dir")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "real.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: real}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real.yaml", filepath.Join(dir, "inside.yaml")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	d, err := Load(context.Background(), root.FS(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantDiag(t, d, "abs.yaml: error: symlink refused")
	wantDiag(t, d, "rel.yaml: error: symlink refused")
	for _, o := range d.Objects {
		if o.Name == "stolen" {
			t.Fatalf("read a file outside the repository through a symlink")
		}
	}
	// inside.yaml points at real.yaml: same object twice.
	wantDiag(t, d, "declared twice")
}
