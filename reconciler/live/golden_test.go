package live

import (
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// assertGolden compares got with testdata/name, or rewrites it with -update.
func assertGolden(t *testing.T, name, got string) {
	t.Helper()
	golden.Check(t, name, got, *update)
}

// TestQuickstartTranscript records `berth plan` against the simulated
// fleet, pass by pass: the first deployment of examples/quickstart, an
// image change rolled out, lab3 lost during a later change, and the
// Deployment removed.
func TestQuickstartTranscript(t *testing.T) {
	var b strings.Builder
	s := newFleetSim(t, load(t, quickstart(t, "1")))
	s.opts.RescheduleAfter = time.Minute
	pass := 0
	run := func(title string, steps int) {
		fmt.Fprintf(&b, "### %s\n", title)
		for range steps {
			p := s.plan()
			pass++
			fmt.Fprintf(&b, "--- pass %d (t+%s)\n", pass, s.now.Sub(t0))
			if err := WriteText(&b, p, false); err != nil {
				t.Fatal(err)
			}
			if p.Converged {
				return
			}
			s.apply(p, nil)
			s.step()
		}
	}
	run("deploy", 10)
	s.desired = load(t, quickstart(t, "2"))
	run("image 1 -> 2", 20)
	s.machine("lab3").reachable = false
	s.desired = load(t, quickstart(t, "3"))
	run("image 2 -> 3 with lab3 unreachable", 4)
	s.machine("lab3").reachable = true
	run("lab3 back", 20)
	fsys := quickstart(t, "3")
	delete(fsys, "app.yaml")
	s.desired = load(t, fsys)
	s.opts.AllowEmpty = true
	run("Deployment removed (allow empty)", 10)
	assertGolden(t, "quickstart.txt", b.String())
}
