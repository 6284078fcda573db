package render

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestValidate")

// TestValidate loads each directory under testdata/validate and compares
// its diagnostics, one a line, with the directory's want.txt. Files whose
// names start with "ok" hold the passing cases: no diagnostic may point
// into them. Run with -update to rewrite want.txt.
func TestValidate(t *testing.T) {
	const root = "testdata/validate"
	dirs, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		if !dir.IsDir() {
			continue
		}
		t.Run(dir.Name(), func(t *testing.T) {
			d := filepath.Join(root, dir.Name())
			got := loadDiagnostics(t, os.DirFS(d))
			var b strings.Builder
			for _, x := range got {
				b.WriteString(x.String())
				b.WriteString("\n")
				if strings.HasPrefix(path.Base(x.File), "ok") {
					t.Errorf("a passing case has a diagnostic: %s", x)
				}
			}
			golden := filepath.Join(d, "want.txt")
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./render -run TestValidate -update)", err)
			}
			if b.String() != string(want) {
				t.Errorf("diagnostics differ from %s\n--- got\n%s--- want\n%s", golden, b.String(), want)
			}
		})
	}
}

func loadDiagnostics(t *testing.T, fsys fs.FS) Diagnostics {
	t.Helper()
	d, err := Load(context.Background(), fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d.Diagnostics
}

// TestSeedValid checks that the example repository loads without errors.
func TestSeedValid(t *testing.T) {
	const dir = "../examples/seed"
	d, err := Load(context.Background(), os.DirFS(dir), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Objects) == 0 {
		t.Fatal("no objects loaded")
	}
	for _, x := range d.Diagnostics {
		if x.Severity == SeverityError {
			t.Error(x)
		}
	}
}

// TestValidateReportsEverything checks that one object with several
// problems gets all of them, not just the first.
func TestValidateReportsEverything(t *testing.T) {
	fsys := fstest.MapFS{"a.yaml": {Data: []byte(`apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
    - name: A
      image: ""
      ports:
        - containerPort: 0
`)}}
	got := loadDiagnostics(t, fsys)
	want := []string{
		`a.yaml:7:7: error: Pod default/p: spec.containers[0].name: invalid container name "A": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name' or '123-abc')`,
		`a.yaml:8:7: error: Pod default/p: spec.containers[0].image: an image is required`,
		`a.yaml:10:11: error: Pod default/p: spec.containers[0].ports[0].containerPort: containerPort 0 is out of range: must be between 1 and 65535`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d diagnostics, want %d:\n%s", len(got), len(want), got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("diagnostic %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

func TestBranchNameProblem(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"berth/status", true},
		{"main", true},
		{"release-1.0", true},
		{"", false},
		{"-x", false},
		{"@", false},
		{"a..b", false},
		{"a/.b", false},
		{"a.lock", false},
		{"a/", false},
		{"/a", false},
		{"a//b", false},
		{"a b", false},
		{"a~b", false},
		{"a.", false},
		{"a@{b", false},
		{"a\x01", false},
	} {
		if got := branchNameProblem(tc.name) == ""; got != tc.ok {
			t.Errorf("branchNameProblem(%q) ok = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

// TestLargeRepoLoads checks that the generated 10,000-object repository the
// benchmarks use loads without a diagnostic. Speed is measured by
// BenchmarkLoad10k and BenchmarkValidate, never asserted in a test.
func TestLargeRepoLoads(t *testing.T) {
	d, err := Load(context.Background(), largeRepo(2500), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d.Objects); n != 4*2500+10 {
		t.Fatalf("loaded %d objects, want %d", n, 4*2500+10)
	}
	if len(d.Diagnostics) != 0 {
		t.Fatalf("unexpected diagnostics: %v", d.Diagnostics)
	}
}

// BenchmarkLoad10k decodes, defaults and validates 10,010 objects.
func BenchmarkLoad10k(b *testing.B) {
	fsys := largeRepo(2500)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(context.Background(), fsys, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	d, err := Load(context.Background(), largeRepo(2500), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		validate(d)
	}
}

// largeRepo makes n apps, each a Deployment, a Service, a ConfigMap and a
// Secret that refer to one another, spread over a few namespaces.
func largeRepo(n int) fstest.MapFS {
	fsys := fstest.MapFS{}
	const namespaces = 10
	var ns strings.Builder
	for i := range namespaces {
		fmt.Fprintf(&ns, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-%d\n", i)
	}
	fsys["namespaces.yaml"] = &fstest.MapFile{Data: []byte(ns.String())}
	for i := range n {
		app := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-%[1]d
  namespace: team-%[2]d
spec:
  replicas: 2
  selector:
    matchLabels:
      app: app-%[1]d
  template:
    metadata:
      labels:
        app: app-%[1]d
    spec:
      containers:
        - name: app
          image: registry.example/app:%[1]d
          ports:
            - name: http
              containerPort: 8080
          env:
            - name: MODE
              valueFrom:
                configMapKeyRef:
                  name: app-%[1]d
                  key: mode
          envFrom:
            - secretRef:
                name: app-%[1]d
          readinessProbe:
            httpGet:
              path: /ready
              port: http
          resources:
            requests:
              cpu: 100m
              memory: 64Mi
            limits:
              memory: 128Mi
          volumeMounts:
            - name: config
              mountPath: /etc/app
      volumes:
        - name: config
          configMap:
            name: app-%[1]d
---
apiVersion: v1
kind: Service
metadata:
  name: app-%[1]d
  namespace: team-%[2]d
spec:
  selector:
    app: app-%[1]d
  ports:
    - name: http
      port: 80
      targetPort: http
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-%[1]d
  namespace: team-%[2]d
data:
  mode: production
---
apiVersion: v1
kind: Secret
metadata:
  name: app-%[1]d
  namespace: team-%[2]d
stringData:
  TOKEN: example
`, i, i%namespaces)
		fsys[fmt.Sprintf("apps/app-%05d.yaml", i)] = &fstest.MapFile{Data: []byte(app)}
	}
	return fsys
}
