package workload

import (
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

func jobSpec(completions, parallelism int32, mut ...func(*batchv1.JobSpec)) batchv1.JobSpec {
	t := template("task")
	t.Spec.RestartPolicy = corev1.RestartPolicyNever
	s := batchv1.JobSpec{
		Completions:    ptr(completions),
		Parallelism:    ptr(parallelism),
		BackoffLimit:   ptr(int32(6)),
		CompletionMode: ptr(batchv1.NonIndexedCompletion),
		Suspend:        ptr(false),
		Template:       t,
	}
	for _, m := range mut {
		m(&s)
	}
	return s
}

func jobObj(name string, spec batchv1.JobSpec) *render.Object {
	return obj("Job", name, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: spec})
}

func indexed(s *batchv1.JobSpec) { s.CompletionMode = ptr(batchv1.IndexedCompletion) }

func TestJobCompletionsAndParallelism(t *testing.T) {
	s := newSim(t, 2, jobObj("migrate", jobSpec(3, 2)))
	w := workloadOf(t, s.compute(), "Job", "migrate")
	if c := wantedNames(w, Create); len(c) != 2 {
		t.Fatalf("created %v, want 2 (parallelism)", c)
	}
	maxActive := 0
	r := s.run(50, func(r Result) {
		active := 0
		for _, p := range s.ownedBy("Job", "migrate") {
			if p.Phase == corev1.PodPending || p.Phase == corev1.PodRunning {
				active++
			}
		}
		maxActive = max(maxActive, active)
	})
	w = workloadOf(t, r, "Job", "migrate")
	if maxActive != 2 {
		t.Errorf("max active %d, want 2", maxActive)
	}
	if c := condition(w, "Complete"); c.Status != corev1.ConditionTrue {
		t.Fatalf("conditions %+v, reason %q", w.Status.Conditions, w.Reason)
	}
	if w.Status.Succeeded != 3 || w.Status.CompletionTime == nil || w.Status.StartTime == nil {
		t.Fatalf("status %+v", w.Status)
	}
	pods := s.ownedBy("Job", "migrate")
	if len(pods) != 3 {
		t.Fatalf("finished pods not kept:\n%s", s.dump())
	}
	for _, p := range pods {
		if p.Labels[LabelJobName] != "migrate" || p.Labels[LabelBatchJobName] != "migrate" {
			t.Errorf("labels %v", p.Labels)
		}
	}
}

func TestJobBackoffLimit(t *testing.T) {
	s := newSim(t, 2, jobObj("flaky", jobSpec(1, 1, func(j *batchv1.JobSpec) { j.BackoffLimit = ptr(int32(2)) })))
	s.runFor = func(string) (int, int32) { return 1, 1 }
	s.step = time.Minute // longer than the backoff, so each pass may retry
	var failures []string
	r := s.run(50, func(r Result) {
		failures = append(failures, wantedNames(workloadOf(t, r, "Job", "flaky"), Create)...)
	})
	w := workloadOf(t, r, "Job", "flaky")
	if c := condition(w, "Failed"); c.Reason != "BackoffLimitExceeded" {
		t.Fatalf("conditions %+v reason %q", w.Status.Conditions, w.Reason)
	}
	if len(failures) != 3 || w.Status.Failed != 3 {
		t.Fatalf("started %v, failed %d; want 3 attempts (backoffLimit 2)", failures, w.Status.Failed)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(failures)))) != 3 {
		t.Fatalf("attempt names repeat: %v", failures)
	}
}

func TestJobBackoffDelay(t *testing.T) {
	s := newSim(t, 1, jobObj("flaky", jobSpec(1, 1)))
	s.runFor = func(string) (int, int32) { return 1, 1 }
	r := s.compute()
	s.apply(r, nil)
	s.tick() // the pod fails now
	failedAt := s.now
	r = s.compute()
	w := workloadOf(t, r, "Job", "flaky")
	if len(wantedNames(w, Create)) != 0 || !strings.Contains(w.Reason, "backing off") {
		t.Fatalf("created %v right after a failure; reason %q", wantedNames(w, Create), w.Reason)
	}
	if want := failedAt.Add(10 * time.Second); !r.Wake.Equal(want) {
		t.Fatalf("wake %v, want %v", r.Wake, want)
	}
	s.now = failedAt.Add(10 * time.Second)
	if w := workloadOf(t, s.compute(), "Job", "flaky"); len(wantedNames(w, Create)) != 1 {
		t.Fatalf("no retry after the backoff: %q", w.Reason)
	}
}

func TestJobOnFailureCountsRestarts(t *testing.T) {
	s := newSim(t, 1, jobObj("flaky", jobSpec(1, 1, func(j *batchv1.JobSpec) {
		j.BackoffLimit = ptr(int32(1))
		j.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	})))
	s.runFor = func(string) (int, int32) { return 1, 1 }
	created := 0
	r := s.run(50, func(r Result) { created += len(wantedNames(workloadOf(t, r, "Job", "flaky"), Create)) })
	w := workloadOf(t, r, "Job", "flaky")
	if condition(w, "Failed").Reason != "BackoffLimitExceeded" || w.Status.Failed != 2 {
		t.Fatalf("status %+v reason %q", w.Status, w.Reason)
	}
	if created != 1 {
		t.Fatalf("OnFailure made %d pods; the agent restarts the one", created)
	}
	if len(s.ownedBy("Job", "flaky")) != 0 {
		t.Fatalf("the running pod of a failed Job was not stopped:\n%s", s.dump())
	}
}

func TestJobActiveDeadline(t *testing.T) {
	s := newSim(t, 1, jobObj("slow", jobSpec(1, 1, func(j *batchv1.JobSpec) { j.ActiveDeadlineSeconds = ptr(int64(30)) })))
	s.runFor = func(string) (int, int32) { return 1000, 0 }
	r := s.compute()
	s.memory = r.Memory
	s.apply(r, nil)
	if want := s.now.Add(30 * time.Second); !r.Wake.Equal(want) {
		t.Fatalf("wake %v, want %v", r.Wake, want)
	}
	s.now = s.now.Add(30 * time.Second)
	w := workloadOf(t, s.compute(), "Job", "slow")
	if condition(w, "Failed").Reason != "DeadlineExceeded" || len(w.Stop) != 1 {
		t.Fatalf("conditions %+v stop %v", w.Status.Conditions, w.Stop)
	}
}

func TestJobIndexed(t *testing.T) {
	s := newSim(t, 2, jobObj("shard", jobSpec(3, 3, indexed)))
	// Index 1 fails once.
	s.runFor = func(name string) (int, int32) {
		if name == "shard-1" {
			return 1, 1
		}
		return 1, 0
	}
	s.step = time.Minute
	r := s.compute()
	w := workloadOf(t, r, "Job", "shard")
	if got := wantedNames(w, Create); !slices.Equal(got, []string{"shard-0", "shard-1", "shard-2"}) {
		t.Fatalf("created %v", got)
	}
	tp := w.Pods[1].Template
	if tp.Annotations[AnnotationCompletionIndex] != "1" || tp.Labels[LabelJobCompletionIndex] != "1" || tp.Spec.Hostname != "shard-1" {
		t.Fatalf("template %+v", tp.ObjectMeta)
	}
	if env := tp.Spec.Containers[0].Env; len(env) != 1 || env[0].Name != EnvJobCompletionIndex || env[0].Value != "1" {
		t.Fatalf("env %v", env)
	}
	r = s.run(50, nil)
	w = workloadOf(t, r, "Job", "shard")
	if w.Status.CompletedIndexes != "0-2" || condition(w, "Complete").Status != corev1.ConditionTrue || w.Status.Failed != 1 {
		t.Fatalf("status %+v", w.Status)
	}
	if s.pods["default/shard-1-1"] == nil || s.pods["default/shard-1-1"].Phase != corev1.PodSucceeded {
		t.Fatalf("retry of index 1 not named shard-1-1:\n%s", s.dump())
	}
}

func TestJobTTLAfterFinished(t *testing.T) {
	s := newSim(t, 1, jobObj("once", jobSpec(1, 1, func(j *batchv1.JobSpec) { j.TTLSecondsAfterFinished = ptr(int32(60)) })))
	s.timersOK = true
	r := s.run(50, nil)
	if len(s.ownedBy("Job", "once")) != 1 || r.Wake.IsZero() {
		t.Fatalf("pods before ttl:\n%s wake %v", s.dump(), r.Wake)
	}
	s.now = r.Wake
	r = s.run(50, nil)
	if len(s.ownedBy("Job", "once")) != 0 {
		t.Fatalf("pods after ttl:\n%s", s.dump())
	}
	w := workloadOf(t, r, "Job", "once")
	if w.Status.Succeeded != 1 || condition(w, "Complete").Status != corev1.ConditionTrue {
		t.Fatalf("status after cleanup %+v", w.Status)
	}
	// Memory remembers the Job ran: nothing starts again.
	if w := workloadOf(t, s.compute(), "Job", "once"); w.Changes() != 0 {
		t.Fatalf("job ran again: %q", w.Reason)
	}
}

func TestJobSuspend(t *testing.T) {
	s := newSim(t, 1, jobObj("batch", jobSpec(2, 2)))
	s.runFor = func(string) (int, int32) { return 1000, 0 }
	s.apply(s.compute(), nil)
	s.objects[0] = jobObj("batch", jobSpec(2, 2, func(j *batchv1.JobSpec) { j.Suspend = ptr(true) }))
	w := workloadOf(t, s.compute(), "Job", "batch")
	if len(w.Stop) != 2 || condition(w, "Suspended").Status != corev1.ConditionTrue {
		t.Fatalf("stop %v conditions %+v", w.Stop, w.Status.Conditions)
	}
}

// TestJobProperties: whatever fails and however often the controller is
// killed (memory lost, output half applied), a Job never runs more pods
// than parallelism, never succeeds an index twice or more pods than its
// completions, and ends Complete or Failed.
func TestJobProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		completions := rapid.Int32Range(1, 6).Draw(rt, "completions")
		par := rapid.Int32Range(1, 4).Draw(rt, "parallelism")
		idx := rapid.Bool().Draw(rt, "indexed")
		spec := jobSpec(completions, par, func(j *batchv1.JobSpec) {
			j.BackoffLimit = ptr(rapid.Int32Range(0, 4).Draw(rt, "backoffLimit"))
			if idx {
				indexed(j)
			}
		})
		s := newSim(rt, 2, jobObj("j", spec))
		s.step = time.Minute
		outcomes := rapid.SliceOfN(rapid.Int32Range(0, 1), 16, 16).Draw(rt, "exit")
		s.runFor = func(name string) (int, int32) { return 1, outcomes[int(suffixHash(name))%len(outcomes)] }
		for step := 0; ; step++ {
			if step > 200 {
				rt.Fatalf("not finished:\n%s", s.dump())
			}
			r := s.chaosPass(rt, 6)
			w := workloadOf(rt, r, "Job", "j")
			if r.Changes() == 0 && s.settled() && (condition(w, "Complete").Status != "" || condition(w, "Failed").Status != "") {
				break
			}
			s.chaosApply(rt, r, 5)
			active, succeeded := int32(0), int32(0)
			doneIdx := map[string]bool{}
			for _, p := range s.ownedBy("Job", "j") {
				switch p.Phase {
				case corev1.PodPending, corev1.PodRunning:
					if !p.Terminating {
						active++
					}
				case corev1.PodSucceeded:
					succeeded++
					if i := p.Labels[LabelJobCompletionIndex]; idx {
						if doneIdx[i] {
							rt.Fatalf("index %s succeeded twice:\n%s", i, s.dump())
						}
						doneIdx[i] = true
					}
				}
			}
			if active > par {
				rt.Fatalf("%d active > parallelism %d:\n%s", active, par, s.dump())
			}
			if succeeded > completions {
				rt.Fatalf("%d succeeded > completions %d:\n%s", succeeded, completions, s.dump())
			}
			s.tick()
		}
	})
}
