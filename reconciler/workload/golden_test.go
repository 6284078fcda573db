package workload

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/render"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// transcript writes what each pass does, one line per action, as a
// reviewer reads a plan.
func transcript(b *strings.Builder, s *sim, pass int, r Result) {
	fmt.Fprintf(b, "pass %d at %s\n", pass, s.now.Format("15:04:05"))
	for _, w := range r.Workloads {
		if w.Changes() == 0 {
			fmt.Fprintf(b, "  %s: %s\n", w.Owner, w.Reason)
			continue
		}
		fmt.Fprintf(b, "  %s: %s\n", w.Owner, w.Reason)
		for _, p := range w.Pods {
			if p.Action != Keep {
				fmt.Fprintf(b, "    %-7s %s %s (%s)\n", p.Action, p.Name, p.Machine, p.Reason)
			}
		}
		for _, st := range w.Stop {
			fmt.Fprintf(b, "    stop    %s %s (%s)\n", st.Name, st.Machine, st.Reason)
		}
	}
	for _, o := range r.Orphans {
		fmt.Fprintf(b, "  orphan %s (%s)\n", o.Name, o.Reason)
	}
}

// TestRolloutTranscript compares the passes of a fleet's rollout, as
// text, with testdata/rollout.golden (go test -update rewrites it).
func TestRolloutTranscript(t *testing.T) {
	fleet := func(image string) []*render.Object {
		return []*render.Object{
			deploymentObj("web", 3, image, strategy(intstr.FromInt32(1), intstr.FromInt32(0))),
			statefulSetObj("db", 2, image),
			daemonSetObj("agent", image, intstr.FromInt32(0), intstr.FromInt32(1)),
			cronJobObj("report", "*/2 * * * *", func(c *batchv1.CronJobSpec) {
				c.ConcurrencyPolicy = batchv1.ForbidConcurrent
				c.JobTemplate.Spec = jobSpec(2, 1)
				c.JobTemplate.Spec.Template.Spec.Containers[0].Image = image
			}),
		}
	}
	s := newSim(t, 2, fleet("v1")...)
	s.step = 20 * time.Second
	s.readyAfter = func(string) int { return 2 }
	s.timersOK = true
	var b strings.Builder
	s.run(30, nil)
	s.objects = fleet("v2")
	for i := 1; i <= 14; i++ {
		r := s.compute()
		s.memory = r.Memory
		transcript(&b, s, i, r)
		s.apply(r, nil)
		s.tick()
	}
	s.objects = s.objects[:1]
	transcript(&b, s, 15, s.compute())

	path := filepath.Join("testdata", "rollout.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("transcript differs from %s (go test -update rewrites it):\n%s", path, got)
	}
}
