package reconciler

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/reconciler/status"
	"berth.dev/berth/render"
)

// quickstartWith renders examples/quickstart with app.yaml edited.
func quickstartWith(t *testing.T, edit func(string) string) *render.Desired {
	t.Helper()
	fsys := fstest.MapFS{}
	for _, f := range []string{"app.yaml", "cluster.yaml", "machines.yaml"} {
		b, err := os.ReadFile("../examples/quickstart/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if f == "app.yaml" {
			b = []byte(edit(string(b)))
		}
		fsys[f] = &fstest.MapFile{Data: b}
	}
	d, err := render.Load(context.Background(), fsys, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestController(t *testing.T) {
	commits := map[string]*render.Desired{
		"c1": quickstartWith(t, func(s string) string { return s }),
		"c2": quickstartWith(t, func(s string) string { return strings.Replace(s, "replicas: 3", "replicas: three", 1) }),
		"c3": quickstartWith(t, func(s string) string { return strings.ReplaceAll(s, "berth/echo:1", "berth/echo:2") }),
	}
	if !commits["c2"].Diagnostics.HasErrors() {
		t.Fatal("c2 should not render")
	}
	a := newAgents("lab1", "lab2", "lab3")
	var mu sync.Mutex
	var statuses []status.Input
	c := &Controller{
		Converge: Converge{Machines: a, Poll: time.Millisecond},
		Load: func(ctx context.Context, commit string) (*render.Desired, error) {
			return commits[commit], nil
		},
		Status: func(ctx context.Context, in status.Input) error {
			mu.Lock()
			defer mu.Unlock()
			statuses = append(statuses, in)
			return nil
		},
		Resync:      5 * time.Millisecond,
		StatusEvery: time.Millisecond,
	}
	ch := make(chan string)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx, ch, live.Memory{}, "") }()

	// waitFor waits until the last status is about commit with outcome.
	waitFor := func(commit, outcome string) status.Input {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			all := statuses
			mu.Unlock()
			for _, in := range all {
				if in.Commit == commit {
					st, err := status.Build(in)
					if err == nil && st.Summary.Outcome == outcome {
						return in
					}
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Fatalf("no %s status for %s; statuses: %d", outcome, commit, len(statuses))
		return status.Input{}
	}
	images := func() map[string]int {
		a.mu.Lock()
		defer a.mu.Unlock()
		out := map[string]int{}
		for _, set := range a.sets {
			for _, p := range set.Pods {
				out[p.Spec.Containers[0].Image]++
			}
		}
		return out
	}

	ch <- "c1"
	waitFor("c1", status.Ready)
	if got := images(); got["198.18.0.1:5000/berth/echo:1"] != 3 || len(got) != 1 {
		t.Errorf("after c1: %v", got)
	}
	ch <- "c2"
	in := waitFor("c2", status.Failed)
	if in.Running != "c1" || len(in.Problems) == 0 || !strings.Contains(in.Problems[0], "app.yaml:") {
		t.Errorf("c2's status: running %q problems %q", in.Running, in.Problems)
	}
	time.Sleep(20 * time.Millisecond)
	if got := images(); got["198.18.0.1:5000/berth/echo:1"] != 3 || len(got) != 1 {
		t.Errorf("a broken commit changed the pods: %v", got)
	}
	// The passes of c1 that go on write c2's failure again, with c1's
	// pass beside it, never c1 alone: the branch's newest commit failed.
	mu.Lock()
	after := slices.IndexFunc(statuses, func(in status.Input) bool { return in.Commit == "c2" })
	for _, in := range statuses[after:] {
		if in.Commit != "c2" || in.Running != "c1" || len(in.Problems) == 0 {
			t.Errorf("a status after c2 failed is about %s (running %q, %d problems)", in.Commit, in.Running, len(in.Problems))
			break
		}
	}
	if n := len(statuses) - after; n < 2 {
		t.Errorf("only %d statuses after c2 failed; the test wants c1's passes to write some", n)
	}
	mu.Unlock()
	ch <- "c3"
	waitFor("c3", status.Ready)
	if got := images(); got["198.18.0.1:5000/berth/echo:2"] != 3 || len(got) != 1 {
		t.Errorf("after c3: %v", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// A restarted controller whose branch is broken carries on with the
// commit its status says ran.
func TestControllerRestartOnBrokenBranch(t *testing.T) {
	good := quickstartWith(t, func(s string) string { return s })
	broken := quickstartWith(t, func(s string) string { return strings.Replace(s, "replicas: 3", "replicas: three", 1) })
	a := newAgents("lab1", "lab2", "lab3")
	var mu sync.Mutex
	var last status.Input
	c := &Controller{
		Converge: Converge{Machines: a, Poll: time.Millisecond},
		Load: func(ctx context.Context, commit string) (*render.Desired, error) {
			if commit == "good" {
				return good, nil
			}
			return broken, nil
		},
		Status: func(ctx context.Context, in status.Input) error {
			mu.Lock()
			defer mu.Unlock()
			last = in
			return nil
		},
	}
	ch := make(chan string, 1)
	ch <- "broken"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go c.Run(ctx, ch, live.Memory{}, "good")
	for ctx.Err() == nil {
		mu.Lock()
		l := last
		mu.Unlock()
		// The status says the branch is broken, and that good runs,
		// converged.
		if l.Commit == "broken" && l.Running == "good" && len(l.Problems) > 0 && l.Pass != nil && l.Pass.Converged {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Errorf("the controller did not carry on with the running commit; last status %+v", last.Commit)
}
