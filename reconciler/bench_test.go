package reconciler

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"berth.dev/berth/render"
)

// fleet10k writes a repository of n Deployments, 100 to a file, each with
// probes, resources, env and a volume, like the ones operators write; when
// changed is true, the image of the first 100 (one file) is changed.
func fleet10k(n int, changed bool) fstest.MapFS {
	fsys := fstest.MapFS{}
	var b strings.Builder
	for i := range n {
		image := "registry.example/app:1.0"
		if changed && i < 100 {
			image = "registry.example/app:1.1"
		}
		fmt.Fprintf(&b, `---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-%05d
  labels: {app: app-%05d, team: t%d}
spec:
  replicas: 3
  selector:
    matchLabels: {app: app-%05d}
  template:
    metadata:
      labels: {app: app-%05d, team: t%d}
    spec:
      containers:
      - name: app
        image: %s
        ports: [{containerPort: 8080, name: http}]
        env:
        - {name: LOG_LEVEL, value: info}
        - {name: REGION, value: eu-west-1}
        resources:
          requests: {cpu: 100m, memory: 128Mi}
          limits: {cpu: "1", memory: 256Mi}
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
        livenessProbe:
          httpGet: {path: /healthz, port: 8080}
        volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {}}]
`, i, i, i%10, i, i, i%10, image)
		if i%100 == 99 || i == n-1 {
			fsys[fmt.Sprintf("apps/%03d.yaml", i/100)] = &fstest.MapFile{Data: []byte(b.String())}
			b.Reset()
		}
	}
	return fsys
}

func loadFS(b *testing.B, fsys fstest.MapFS, opts render.Options) *render.Desired {
	d, err := render.Load(context.Background(), fsys, opts)
	if err != nil {
		b.Fatal(err)
	}
	if d.Diagnostics.HasErrors() {
		b.Fatal(d.Diagnostics.Err())
	}
	return d
}

// BenchmarkDiff10k diffs two revisions of 10,000 Deployments of which 100
// differ. "separate" loads each revision on its own, so every object is
// compared with equality.Semantic.DeepEqual; "cached" loads both through
// one render.Cache, as a plan should, so the 99 unchanged files give the
// same pointers.
func BenchmarkDiff10k(b *testing.B) {
	const n = 10000
	fromFS, toFS := fleet10k(n, false), fleet10k(n, true)
	cache := render.NewCache()
	for _, tc := range []struct {
		name     string
		from, to *render.Desired
	}{
		{"separate", loadFS(b, fromFS, render.Options{}), loadFS(b, toFS, render.Options{})},
		{"cached", loadFS(b, fromFS, render.Options{Cache: cache}), loadFS(b, toFS, render.Options{Cache: cache})},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if got := Diff(tc.from, tc.to); len(got) != n/100 {
					b.Fatalf("%d changes, want %d", len(got), n/100)
				}
			}
		})
	}
}
