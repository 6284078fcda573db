package reconciler

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/gitsource"
	"berth.dev/berth/internal/gittest"
)

// appFiles writes one file per app holding a Deployment, a Service and a
// ConfigMap, until n objects exist; the Deployment of every app listed in
// bumped gets a new image.
func appFiles(n int, bumped map[int]bool) func(add func(path, content string)) {
	return func(add func(path, content string)) {
		for i := 0; i*3 < n; i++ {
			image := "registry.example/app:1.0"
			if bumped[i] {
				image = "registry.example/app:1.1"
			}
			var b strings.Builder
			fmt.Fprintf(&b, `apiVersion: v1
kind: ConfigMap
metadata:
  name: app-%05[1]d
data:
  LOG_LEVEL: info
  app.conf: |
    listen = ":8080"
    workers = 4
---
apiVersion: v1
kind: Service
metadata:
  name: app-%05[1]d
spec:
  selector: {app: app-%05[1]d}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-%05[1]d
  labels: {app: app-%05[1]d, team: t%[2]d}
spec:
  replicas: 3
  selector:
    matchLabels: {app: app-%05[1]d}
  template:
    metadata:
      labels: {app: app-%05[1]d, team: t%[2]d}
    spec:
      containers:
      - name: app
        image: %[3]s
        ports: [{containerPort: 8080, name: http}]
        envFrom: [{configMapRef: {name: app-%05[1]d}}]
        resources:
          requests: {cpu: 100m, memory: 128Mi}
          limits: {cpu: "1", memory: 256Mi}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
        livenessProbe:
          httpGet: {path: /healthz, port: http}
        volumeMounts: [{name: conf, mountPath: /etc/app}]
      volumes: [{name: conf, configMap: {name: app-%05[1]d}}]
`, i, i%10, image)
			add(fmt.Sprintf("apps/%02d/app-%05d.yaml", i%50, i), b.String())
		}
	}
}

// BenchmarkPlanRevisions10k is the plan of the foundation issue: 10,002
// objects in 3,334 files of a real git repository, between two commits
// that differ in the image of 100 Deployments spread over 100 files. One
// op is what `berth plan --from A --to B` does after parsing its flags:
// open the repository, read both trees, render, admit, diff. Target: <= 1 s
// and <= 500 MiB. peak-heap-MiB is the largest live heap seen during the
// ops; maxrss-MiB is the process's peak resident set, setup included.
func BenchmarkPlanRevisions10k(b *testing.B) {
	const objects = 10002
	repo := gittest.New(b)
	from := repo.CommitMany(appFiles(objects, nil), "10k objects")
	bumped := map[int]bool{}
	for i := 0; len(bumped) < 100; i += 33 {
		bumped[i] = true
	}
	to := repo.CommitMany(appFiles(objects, bumped), "bump 100 images")
	ctx := context.Background()
	// gittest writes loose objects; a fleet repository that berth clones
	// or that has seen a git gc keeps them in a packfile. Plan from a
	// clone, as serve and plan --repo URL do.
	cacheDir := b.TempDir()
	clone, err := gitsource.Clone(ctx, gitsource.CloneOptions{URL: repo.URL(), CacheDir: cacheDir})
	if err != nil {
		b.Fatal(err)
	}
	path := clone.Path()
	clone.Close()

	peak := newHeapPeak()
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		stop := peak.watch()
		r, err := gitsource.Open(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		p, err := PlanRevisions(ctx, r, from, to, OfflineOptions{})
		r.Close()
		stop()
		if err != nil {
			b.Fatal(err)
		}
		if p.Summary.Change != 100 || p.Summary.Add+p.Summary.Destroy != 0 {
			b.Fatalf("plan summary %+v, want 100 changes", p.Summary)
		}
		if p.Diagnostics.HasErrors() {
			b.Fatal(p.Diagnostics.Err())
		}
	}
	b.StopTimer()
	// CPU time (all threads) per op: steadier than wall time when other
	// work shares the two cores.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
	b.ReportMetric(float64(peak.max())/(1<<20), "peak-heap-MiB")
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		b.ReportMetric(float64(ru.Maxrss)/1024, "maxrss-MiB")
	}
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heapPeak samples the live heap every millisecond while watching.
type heapPeak struct {
	mu      sync.Mutex
	maxSeen uint64
}

func newHeapPeak() *heapPeak { return &heapPeak{} }

func (h *heapPeak) watch() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			h.mu.Lock()
			h.maxSeen = max(h.maxSeen, s[0].Value.Uint64())
			h.mu.Unlock()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() { close(done); wg.Wait(); runtime.GC() }
}

func (h *heapPeak) max() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.maxSeen
}
