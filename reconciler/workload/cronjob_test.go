package workload

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"pgregory.net/rapid"

	"berth.dev/berth/render"
)

func cronJobObj(name, schedule string, mut ...func(*batchv1.CronJobSpec)) *render.Object {
	c := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: batchv1.CronJobSpec{
			Schedule:                   schedule,
			ConcurrencyPolicy:          batchv1.AllowConcurrent,
			Suspend:                    ptr(false),
			SuccessfulJobsHistoryLimit: ptr(int32(3)),
			FailedJobsHistoryLimit:     ptr(int32(1)),
			JobTemplate:                batchv1.JobTemplateSpec{Spec: jobSpec(1, 1)},
		},
	}
	for _, m := range mut {
		m(&c.Spec)
	}
	return obj("CronJob", name, c)
}

// jobsOf lists the Jobs a CronJob's result holds, by name.
func jobsOf(r Result, cronJob string) []string {
	var out []string
	for _, w := range r.Workloads {
		if w.Owner.Kind == "Job" && strings.HasPrefix(w.Owner.Name, cronJob+"-") {
			out = append(out, w.Owner.Name)
		}
	}
	return out
}

func runName(cronJob string, t time.Time) string {
	return fmt.Sprintf("%s-%d", cronJob, t.Unix()/60)
}

// advance passes until now+d, a pass each step, applying everything.
func (s *sim) advance(d time.Duration) Result {
	var r Result
	for end := s.now.Add(d); !s.now.After(end); {
		r = s.compute()
		s.memory = r.Memory
		s.apply(r, nil)
		s.tick()
	}
	return r
}

func TestCronJobRunsOnSchedule(t *testing.T) {
	s := newSim(t, 1, cronJobObj("report", "*/5 * * * *"))
	r := s.compute()
	if w := workloadOf(t, r, "CronJob", "report"); w.Changes() != 0 || len(jobsOf(r, "report")) != 0 {
		t.Fatalf("a run before the first schedule: %q", w.Reason)
	}
	if want := t0.Add(5 * time.Minute); !r.Wake.Equal(want) {
		t.Fatalf("wake %v, want %v", r.Wake, want)
	}
	s.memory = r.Memory
	s.now = r.Wake
	r = s.compute()
	due := t0.Add(5 * time.Minute)
	if got := jobsOf(r, "report"); !slices.Equal(got, []string{runName("report", due)}) {
		t.Fatalf("jobs %v", got)
	}
	w := workloadOf(t, r, "Job", runName("report", due))
	if len(wantedNames(w, Create)) != 1 {
		t.Fatalf("the run starts no pod: %q", w.Reason)
	}
	tp := w.Pods[0].Template
	if tp.Labels[LabelCronJob] != "report" || tp.Annotations[AnnotationScheduled] != due.Format(time.RFC3339) {
		t.Fatalf("template meta %+v", tp.ObjectMeta)
	}
	cw := workloadOf(t, r, "CronJob", "report")
	if cw.Status.LastScheduleTime == nil || !cw.Status.LastScheduleTime.Equal(due) || !strings.Contains(cw.Reason, "start "+runName("report", due)) {
		t.Fatalf("status %+v reason %q", cw.Status, cw.Reason)
	}
	// Once it finished, nothing to do until the next schedule.
	s.memory = r.Memory
	s.apply(r, nil)
	s.step = 10 * time.Second
	for range 5 {
		s.tick()
		r = s.compute()
		s.memory = r.Memory
		s.apply(r, nil)
	}
	if r.Changes() != 0 {
		t.Fatalf("changes after the run finished: %+v", r)
	}
	cw = workloadOf(t, r, "CronJob", "report")
	if cw.Status.LastSuccessfulTime == nil || len(cw.Status.ActiveJobs) != 0 {
		t.Fatalf("status %+v", cw.Status)
	}
}

func TestCronJobTimeZone(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*batchv1.CronJobSpec)
	}{
		{"timeZone", func(c *batchv1.CronJobSpec) { c.Schedule = "0 9 * * *"; c.TimeZone = ptr("Europe/Berlin") }},
		{"CRON_TZ", func(c *batchv1.CronJobSpec) { c.Schedule = "CRON_TZ=Europe/Berlin 0 9 * * *" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, 1, cronJobObj("daily", "", tc.mut))
			s.now = t0.Add(-time.Hour)
			r := s.compute()
			// 09:00 in Berlin in November is 08:00 UTC.
			if !r.Wake.Equal(t0) {
				t.Fatalf("wake %v, want %v", r.Wake, t0)
			}
		})
	}
	s := newSim(t, 1, cronJobObj("bad", "0 9 * * *", func(c *batchv1.CronJobSpec) { c.TimeZone = ptr("Mars/Olympus") }))
	if w := workloadOf(t, s.compute(), "CronJob", "bad"); condition(w, "ReconcileError").Reason != "InvalidSpec" {
		t.Fatalf("conditions %+v", w.Status.Conditions)
	}
	s = newSim(t, 1, cronJobObj("bad", "61 * * * *"))
	if w := workloadOf(t, s.compute(), "CronJob", "bad"); !strings.Contains(w.Reason, "schedule") {
		t.Fatalf("reason %q", w.Reason)
	}
}

func TestCronJobConcurrencyPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy     batchv1.ConcurrencyPolicy
		wantActive int
	}{
		{batchv1.AllowConcurrent, 2},
		{batchv1.ForbidConcurrent, 1},
		{batchv1.ReplaceConcurrent, 1},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			s := newSim(t, 1, cronJobObj("sync", "* * * * *", func(c *batchv1.CronJobSpec) { c.ConcurrencyPolicy = tc.policy }))
			s.runFor = func(string) (int, int32) { return 1000, 0 }
			s.step = 30 * time.Second
			r := s.advance(130 * time.Second) // runs at 08:01, then at 08:02
			_ = r
			r = s.compute()
			cw := workloadOf(t, r, "CronJob", "sync")
			if len(cw.Status.ActiveJobs) != tc.wantActive {
				t.Fatalf("active %v, want %d (%q)", cw.Status.ActiveJobs, tc.wantActive, cw.Reason)
			}
			if tc.policy == batchv1.ForbidConcurrent && (!strings.Contains(cw.Reason, "Forbid") || cw.Status.ActiveJobs[0] != runName("sync", t0.Add(time.Minute))) {
				t.Errorf("reason %q active %v", cw.Reason, cw.Status.ActiveJobs)
			}
			if tc.policy == batchv1.ReplaceConcurrent && cw.Status.ActiveJobs[0] != runName("sync", t0.Add(2*time.Minute)) {
				t.Errorf("active %v, want the 08:02 run", cw.Status.ActiveJobs)
			}
			running := 0
			for _, p := range s.pods {
				if p.Phase == corev1.PodRunning && !p.Terminating {
					running++
				}
			}
			if running != tc.wantActive {
				t.Fatalf("%d pods running, want %d:\n%s", running, tc.wantActive, s.dump())
			}
		})
	}
}

func TestCronJobStartingDeadline(t *testing.T) {
	// Last run at 07:00; the controller was away until 08:00:30.
	prior := func(s *sim) {
		s.memory = Memory{Workloads: map[string]*WorkloadMemory{"CronJob default/tick": {CronJob: &CronJobMemory{
			FirstSeen: t0.Add(-24 * time.Hour), LastScheduleTime: t0.Add(-time.Hour)}}}}
		s.now = t0.Add(30 * time.Second)
	}
	s := newSim(t, 1, cronJobObj("tick", "*/10 * * * *", func(c *batchv1.CronJobSpec) { c.StartingDeadlineSeconds = ptr(int64(60)) }))
	prior(s)
	if got := jobsOf(s.compute(), "tick"); !slices.Equal(got, []string{runName("tick", t0)}) {
		t.Fatalf("jobs %v, want the 08:00 run (within 60 s)", got)
	}
	s = newSim(t, 1, cronJobObj("tick", "*/10 * * * *", func(c *batchv1.CronJobSpec) { c.StartingDeadlineSeconds = ptr(int64(10)) }))
	prior(s)
	if got := jobsOf(s.compute(), "tick"); len(got) != 0 {
		t.Fatalf("jobs %v, want none: the 08:00 run missed its 10 s deadline", got)
	}
}

func TestCronJobTooManyMissed(t *testing.T) {
	s := newSim(t, 1, cronJobObj("tick", "* * * * *"))
	s.memory = Memory{Workloads: map[string]*WorkloadMemory{"CronJob default/tick": {CronJob: &CronJobMemory{
		FirstSeen: t0.Add(-48 * time.Hour), LastScheduleTime: t0.Add(-24 * time.Hour)}}}}
	r := s.compute()
	if got := jobsOf(r, "tick"); !slices.Equal(got, []string{runName("tick", t0)}) {
		t.Fatalf("jobs %v, want only the latest", got)
	}
	if w := workloadOf(t, r, "CronJob", "tick"); !strings.Contains(w.Reason, "too many missed start times") {
		t.Fatalf("reason %q", w.Reason)
	}
}

func TestCronJobHistoryLimits(t *testing.T) {
	s := newSim(t, 1, cronJobObj("tick", "* * * * *", func(c *batchv1.CronJobSpec) {
		c.SuccessfulJobsHistoryLimit = ptr(int32(2))
	}))
	s.step = 20 * time.Second
	r := s.advance(6 * time.Minute)
	r = s.advance(30 * time.Second)
	jobs := jobsOf(r, "tick")
	kept := 0
	for _, n := range jobs {
		if w := workloadOf(t, r, "Job", n); len(w.Pods) > 0 {
			kept++
		}
	}
	if kept != 2 {
		t.Fatalf("%d runs kept of %v, want 2:\n%s", kept, jobs, s.dump())
	}
	if n := len(s.memory.Workloads["CronJob default/tick"].CronJob.Runs); n != 2 {
		t.Fatalf("%d runs remembered", n)
	}
}

func TestCronJobSuspend(t *testing.T) {
	s := newSim(t, 1, cronJobObj("tick", "* * * * *", func(c *batchv1.CronJobSpec) { c.Suspend = ptr(true) }))
	s.step = time.Minute
	r := s.advance(5 * time.Minute)
	if len(jobsOf(r, "tick")) != 0 || !r.Wake.IsZero() {
		t.Fatalf("suspended CronJob ran %v, wake %v", jobsOf(r, "tick"), r.Wake)
	}
	if w := workloadOf(t, r, "CronJob", "tick"); condition(w, "Suspended").Status != corev1.ConditionTrue {
		t.Fatalf("conditions %+v", w.Status.Conditions)
	}
}

// TestCronJobRecoversWithoutMemory: a controller that lost its memory
// finds the running Job through its pods and neither starts it again nor
// starts another under Forbid.
func TestCronJobRecoversWithoutMemory(t *testing.T) {
	s := newSim(t, 1, cronJobObj("sync", "* * * * *", func(c *batchv1.CronJobSpec) { c.ConcurrencyPolicy = batchv1.ForbidConcurrent }))
	s.runFor = func(string) (int, int32) { return 1000, 0 }
	s.step = 30 * time.Second
	s.advance(70 * time.Second)
	before := s.dump()
	for range 4 {
		s.memory = Memory{}
		r := s.compute()
		if n := r.Changes(); n != 0 {
			t.Fatalf("%d changes after memory loss: %+v", n, r.Workloads)
		}
		cw := workloadOf(t, r, "CronJob", "sync")
		if len(cw.Status.ActiveJobs) != 1 {
			t.Fatalf("active %v", cw.Status.ActiveJobs)
		}
		s.now = s.now.Add(time.Minute)
	}
	if s.dump() != before {
		t.Fatal("pods changed")
	}
}

// TestCronJobProperties runs a CronJob for two simulated hours with Jobs
// of random length, a controller that loses its memory at random, and
// checks at every step that concurrencyPolicy holds, that no run starts
// twice, that Allow misses no schedule, and that history stays within its
// limits.
func TestCronJobProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		policy := rapid.SampledFrom([]batchv1.ConcurrencyPolicy{batchv1.AllowConcurrent, batchv1.ForbidConcurrent, batchv1.ReplaceConcurrent}).Draw(rt, "policy")
		okLimit := rapid.Int32Range(0, 3).Draw(rt, "successfulJobsHistoryLimit")
		s := newSim(rt, 2, cronJobObj("c", "*/2 * * * *", func(c *batchv1.CronJobSpec) {
			c.ConcurrencyPolicy = policy
			c.SuccessfulJobsHistoryLimit = ptr(okLimit)
		}))
		s.step = 30 * time.Second
		lengths := rapid.SliceOfN(rapid.IntRange(1, 10), 8, 8).Draw(rt, "runFor")
		s.runFor = func(name string) (int, int32) { return lengths[int(suffixHash(name))%len(lengths)], 0 }
		started := map[string]bool{}
		kills := 0
		for end := s.now.Add(2 * time.Hour); s.now.Before(end); {
			if rapid.IntRange(0, 9).Draw(rt, "kill") == 9 {
				// Memory lost: schedules due since the last pass may be
				// missed, never run twice.
				s.memory = Memory{}
				kills++
			}
			r := s.compute()
			s.memory = r.Memory
			for _, w := range r.Workloads {
				if w.Owner.Kind == "Job" && len(wantedNames(w, Create)) > 0 && len(w.Pods) == len(wantedNames(w, Create)) {
					if started[w.Owner.Name] {
						rt.Fatalf("run %s started twice at %s (%q):\n%s", w.Owner.Name, s.now, workloadOf(rt, r, "CronJob", "c").Reason, s.dump())
					}
					started[w.Owner.Name] = true
				}
			}
			s.apply(r, nil)
			runs := map[string]bool{}
			for _, p := range s.pods {
				if p.Phase == corev1.PodRunning || p.Phase == corev1.PodPending {
					if !p.Terminating {
						runs[p.Labels[LabelJobName]] = true
					}
				}
			}
			if policy != batchv1.AllowConcurrent && len(runs) > 1 {
				rt.Fatalf("%s: %d runs at once:\n%s", policy, len(runs), s.dump())
			}
			s.tick()
		}
		if policy == batchv1.AllowConcurrent && (len(started) > 59 || len(started) < 59-kills) {
			rt.Fatalf("Allow: %d runs in two hours of */2 with %d memory losses, want 59 (08:02 to 09:58)", len(started), kills)
		}
		succeeded := map[string]bool{}
		for _, p := range s.pods {
			if p.Phase == corev1.PodSucceeded {
				succeeded[p.Labels[LabelJobName]] = true
			}
		}
		// The newest run is kept beyond the limit while an older one runs.
		if int32(len(succeeded)) > okLimit+1 {
			rt.Fatalf("%d successful runs kept > limit %d", len(succeeded), okLimit)
		}
	})
}

func TestCronJobDefaultsItsJobs(t *testing.T) {
	s := newSim(t, 1, cronJobObj("once", "* * * * *", func(c *batchv1.CronJobSpec) {
		c.JobTemplate.Spec = batchv1.JobSpec{Template: c.JobTemplate.Spec.Template} // as written, not defaulted
	}))
	s.now = t0.Add(time.Minute)
	s.memory = Memory{Workloads: map[string]*WorkloadMemory{"CronJob default/once": {CronJob: &CronJobMemory{FirstSeen: t0}}}}
	w := workloadOf(t, s.compute(), "Job", runName("once", s.now))
	if !strings.HasPrefix(w.Reason, "0/1 succeeded") || len(wantedNames(w, Create)) != 1 {
		t.Fatalf("reason %q", w.Reason)
	}
}
