package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLivenessFailureRestarts(t *testing.T) {
	h := newHarness(t)
	c := ctr("app")
	c.LivenessProbe = httpProbe("app/Liveness")
	c.LivenessProbe.InitialDelaySeconds = 5
	h.set(1, mkPod("web", c))
	h.advance(20 * time.Second)
	if got := h.probeCount("app/Liveness"); got != 2 {
		t.Errorf("%d liveness probes in 20s with initialDelay 5 and period 10; want 2 (at 5s, 15s)", got)
	}
	h.rt.takeCalls()

	h.setProbe("app/Liveness", false)
	// Failures at 25s and 35s are below the threshold; the third (45s)
	// restarts the container.
	h.advance(20 * time.Second)
	if got := h.dump(); got != "default/web Running ready\n  app running restarts=0 started ready\n" {
		t.Errorf("after two failures:\n%s", got)
	}
	h.advance(10 * time.Second)
	want := []string{"stop default/web/app#0 grace=30s", "create default/web/app#1", "start default/web/app#1"}
	if diff := cmp.Diff(want, h.rt.takeCalls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if got := h.dump(); got != "default/web Running ready\n  app running last=Error(137) restarts=1 started ready\n" {
		t.Errorf("after the restart:\n%s", got)
	}
	var lines []string
	for _, e := range h.eventLines("default/web") {
		if (strings.HasPrefix(e, "Unhealthy") || strings.HasPrefix(e, "Killing")) && len(lines) < 4 {
			lines = append(lines, e)
		}
	}
	wantEv := []string{
		"Unhealthy app: Liveness probe failed: HTTP probe failed with statuscode: 503",
		"Unhealthy app: Liveness probe failed: HTTP probe failed with statuscode: 503",
		"Unhealthy app: Liveness probe failed: HTTP probe failed with statuscode: 503",
		"Killing app: Container app failed liveness probe, will be restarted",
	}
	if diff := cmp.Diff(wantEv, lines); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}

	// Still failing: the new instance is probed after its initial delay,
	// fails three more times and is stopped again; its restart now waits
	// out the crash backoff (10 s from the exit).
	var stopAt, startAt time.Duration
	t0 := h.clock.Now()
	for i := 0; i < 60 && startAt == 0; i++ {
		h.advance(time.Second)
		for _, c := range h.rt.takeCalls() {
			switch {
			case strings.HasPrefix(c, "stop default/web/app#1"):
				stopAt = h.clock.Now().Sub(t0)
			case strings.HasPrefix(c, "start default/web/app#2"):
				startAt = h.clock.Now().Sub(t0)
				if st := h.pod("default/web").ContainerStatuses[0]; st.RestartCount != 2 {
					t.Errorf("restartCount %d after the second restart; want 2", st.RestartCount)
				}
			}
		}
		if stopAt != 0 && startAt == 0 {
			if got := h.pod("default/web").ContainerStatuses[0].State.Waiting; got == nil || got.Reason != "CrashLoopBackOff" {
				t.Errorf("state after second kill = %+v; want CrashLoopBackOff", got)
			}
		}
	}
	if stopAt == 0 || startAt-stopAt != 10*time.Second {
		t.Errorf("second kill at %v, restart at %v; want the restart 10s after", stopAt, startAt)
	}
}

func TestStartupProbeGatesOthers(t *testing.T) {
	h := newHarness(t)
	c := ctr("app")
	c.StartupProbe = httpProbe("app/Startup")
	c.StartupProbe.FailureThreshold = 30
	c.LivenessProbe = httpProbe("app/Liveness")
	c.ReadinessProbe = httpProbe("app/Readiness")
	h.setProbe("app/Startup", false)
	h.set(1, mkPod("web", c))
	h.advance(60 * time.Second)
	// Early retries in the first period are not counted; those at the
	// period (0 s, 10 s, ... 60 s) are, and raise an event each.
	if n, l, r := len(unhealthy(h.eventLines("default/web"))), h.probeCount("app/Liveness"), h.probeCount("app/Readiness"); n != 7 || l != 0 || r != 0 {
		t.Errorf("probes before startup: %d failures counted, liveness %d readiness %d; want 7, 0, 0", n, l, r)
	}
	if got := h.dump(); got != "default/web Running\n  app running restarts=0\n" {
		t.Errorf("before startup:\n%s", got)
	}
	h.setProbe("app/Startup", true)
	h.advance(20 * time.Second)
	if got := h.dump(); got != "default/web Running ready\n  app running restarts=0 started ready\n" {
		t.Errorf("started and ready:\n%s", got)
	}
	startups := h.probeCount("app/Startup")
	h.advance(60 * time.Second)
	if h.probeCount("app/Startup") != startups {
		t.Error("the startup probe kept running after it succeeded")
	}
	if h.probeCount("app/Liveness") < 6 {
		t.Errorf("liveness ran %d times after startup; want every period", h.probeCount("app/Liveness"))
	}
}

func TestStartupProbeFailureRestarts(t *testing.T) {
	h := newHarness(t)
	c := ctr("app")
	c.StartupProbe = httpProbe("app/Startup")
	c.StartupProbe.PeriodSeconds = 1
	h.setProbe("app/Startup", false)
	h.set(1, mkPod("web", c))
	h.rt.takeCalls()
	h.advance(3 * time.Second)
	calls := h.rt.takeCalls()
	if len(calls) == 0 || calls[0] != "stop default/web/app#0 grace=30s" {
		t.Errorf("calls after three startup failures: %v; want a stop", calls)
	}
}

func TestReadinessFlips(t *testing.T) {
	h := newHarness(t)
	c := ctr("app")
	c.ReadinessProbe = httpProbe("app/Readiness")
	c.ReadinessProbe.InitialDelaySeconds = 5
	h.set(1, mkPod("web", c))
	steps := []struct {
		do   func()
		want string
	}{
		{func() {}, "default/web Running\n  app running restarts=0 started\n"},
		{func() { h.advance(5 * time.Second) }, "default/web Running ready\n  app running restarts=0 started ready\n"},
		{func() { h.setProbe("app/Readiness", false); h.advance(20 * time.Second) }, "default/web Running ready\n  app running restarts=0 started ready\n"},
		{func() { h.advance(10 * time.Second) }, "default/web Running\n  app running restarts=0 started\n"},
		{func() { h.setProbe("app/Readiness", true); h.advance(10 * time.Second) }, "default/web Running ready\n  app running restarts=0 started ready\n"},
	}
	var got, want strings.Builder
	for _, s := range steps {
		s.do()
		got.WriteString(h.dump() + "--\n")
		want.WriteString(s.want + "--\n")
	}
	if diff := cmp.Diff(want.String(), got.String()); diff != "" {
		t.Errorf("readiness (-want +got):\n%s", diff)
	}
	for _, c := range h.rt.takeCalls() {
		if strings.HasPrefix(c, "stop ") {
			t.Errorf("readiness failure stopped the container: %s", c)
		}
	}
}

// A fresh container whose server is not up at its first readiness probe
// is retried early, and Ready as soon as it answers, not a period later;
// the early failures count toward nothing.
func TestReadinessEarlyRetries(t *testing.T) {
	h := newHarness(t)
	c := ctr("app")
	c.ReadinessProbe = httpProbe("app/Readiness")
	c.ReadinessProbe.FailureThreshold = 1
	h.setProbe("app/Readiness", false)
	h.set(1, mkPod("web", c))
	for range 20 {
		h.clock.Advance(5 * time.Millisecond)
		h.settle()
	}
	if n := h.probeCount("app/Readiness"); n < 3 {
		t.Errorf("%d readiness probes in the first 100 ms; want the first and early retries", n)
	}
	if got := unhealthy(h.eventLines("default/web")); len(got) != 1 {
		t.Errorf("events after early retries: %q; want only the first failure", got)
	}
	h.setProbe("app/Readiness", true)
	for range 50 {
		h.clock.Advance(10 * time.Millisecond)
		h.settle()
	}
	if got := h.dump(); got != "default/web Running ready\n  app running restarts=0 started ready\n" {
		t.Errorf("500 ms after the server answers:\n%s", got)
	}
	// Once ready, the period rules again: no early retries after a failure.
	h.setProbe("app/Readiness", false)
	h.advance(10 * time.Second)
	n := h.probeCount("app/Readiness")
	h.advance(5 * time.Second)
	if got := h.probeCount("app/Readiness"); got != n {
		t.Errorf("%d probes within half a period after a ready container failed; want none", got-n)
	}
}

// unhealthy keeps the Unhealthy events of lines (from eventLines).
func unhealthy(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "Unhealthy ") {
			out = append(out, l)
		}
	}
	return out
}

// No probe runs once the manager's Run has returned.
func TestProbesStopWithRun(t *testing.T) {
	h := newHarness(t)
	c := ctr("app")
	c.LivenessProbe = httpProbe("app/Liveness")
	c.ReadinessProbe = httpProbe("app/Readiness")
	h.set(1, mkPod("web", c))
	h.advance(20 * time.Second)
	if h.probeCount("app/Liveness") == 0 || h.probeCount("app/Readiness") == 0 {
		t.Fatal("no probes ran while the agent ran")
	}
	h.stop()
	l, r := h.probeCount("app/Liveness"), h.probeCount("app/Readiness")
	h.clock.Advance(time.Minute)
	time.Sleep(50 * time.Millisecond)
	if h.probeCount("app/Liveness") != l || h.probeCount("app/Readiness") != r {
		t.Errorf("probes ran after Run returned: liveness %d -> %d, readiness %d -> %d", l, h.probeCount("app/Liveness"), r, h.probeCount("app/Readiness"))
	}
}
