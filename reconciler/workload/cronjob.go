package workload

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// tooManyMissed is where Kubernetes warns about missed schedules.
const tooManyMissed = 100

// cronJob runs one CronJob: it starts a Job named
// <cronjob>-<scheduled minutes since the epoch> for the most recent
// schedule it has not run (within startingDeadlineSeconds), honouring
// concurrencyPolicy and suspend, keeps the history limits, and asks to
// be woken for the next schedule. It returns its own workload (no pods)
// followed by one per Job it remembers.
func (p *pass) cronJob(c *batchv1.CronJob, ns, name string) []Workload {
	owner := Owner{Kind: "CronJob", Namespace: ns, Name: name}
	p.claimed[owner] = true
	mem := p.memory(owner)
	if mem.CronJob == nil {
		mem.CronJob = &CronJobMemory{FirstSeen: p.now}
	}
	cm := mem.CronJob
	b := newBuilder(owner)
	st := &b.w.Status

	spec := c.Spec.Schedule
	if c.Spec.TimeZone != nil {
		if _, err := time.LoadLocation(*c.Spec.TimeZone); err != nil {
			return []Workload{b.invalid(nil, fmt.Errorf("timeZone %q: %w", *c.Spec.TimeZone, err))}
		}
		spec = "CRON_TZ=" + *c.Spec.TimeZone + " " + spec
	}
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		return []Workload{b.invalid(nil, fmt.Errorf("schedule %q: %w", c.Spec.Schedule, err))}
	}

	// The Jobs it started: remembered, or found through their pods.
	runs := map[string]time.Time{}
	for _, r := range cm.Runs {
		runs[r.Name] = r.Scheduled
	}
	for o, pods := range p.byOwner {
		if o.Kind != "Job" || o.Namespace != ns || len(pods) == 0 || pods[0].Labels[LabelCronJob] != name {
			continue
		}
		if _, ok := runs[o.Name]; ok {
			continue
		}
		if t, ok := scheduledOf(name, o.Name); ok {
			runs[o.Name] = t
		}
	}
	type run struct {
		name      string
		scheduled time.Time
		stopWhy   string // set: remove its pods and forget it
	}
	var list []*run
	for n, t := range runs {
		list = append(list, &run{name: n, scheduled: t})
	}
	slices.SortFunc(list, func(a, b *run) int { return cmp.Or(a.scheduled.Compare(b.scheduled), cmp.Compare(a.name, b.name)) })
	for _, r := range list {
		if r.scheduled.After(cm.LastScheduleTime) {
			cm.LastScheduleTime = r.scheduled
		}
	}

	// The most recent schedule not yet run.
	var reasons []string
	var due time.Time
	if !*orFalse(c.Spec.Suspend) {
		earliest := cm.LastScheduleTime
		if earliest.IsZero() {
			earliest = cm.FirstSeen
		}
		if sds := c.Spec.StartingDeadlineSeconds; sds != nil {
			if lim := p.now.Add(-time.Duration(*sds) * time.Second); lim.After(earliest) {
				earliest = lim
			}
		}
		var missed int
		due, missed = mostRecent(sched, earliest, p.now)
		if missed > tooManyMissed {
			reasons = append(reasons, fmt.Sprintf("too many missed start times (%d > %d); running the latest; set or decrease startingDeadlineSeconds or check clock skew", missed, tooManyMissed))
		}
		next := sched.Next(p.now)
		p.wakeAt(next)
		st.NextScheduleTime = &next
	} else {
		reasons = append(reasons, "suspended")
	}

	// Run the Jobs it has; then decide on a new one.
	labels := map[string]string{LabelCronJob: name}
	var out []Workload
	jobs := map[string]int{}
	// The Jobs it creates are defaulted as Kubernetes defaults a Job: a
	// non-parallel one completes once.
	js := c.Spec.JobTemplate.Spec
	if js.Completions == nil && js.Parallelism == nil {
		one := int32(1)
		js.Completions = &one
	}
	runJob := func(r *run) {
		jo := Owner{Kind: "Job", Namespace: ns, Name: r.name}
		w := p.job(&js, jo, labels, map[string]string{AnnotationScheduled: r.scheduled.UTC().Format(time.RFC3339)})
		jobs[r.name] = len(out)
		out = append(out, w)
	}
	finished := func(r *run) string {
		return p.next[Owner{Kind: "Job", Namespace: ns, Name: r.name}.String()].Job.Finished
	}
	var active []*run
	for _, r := range list {
		runJob(r)
		if finished(r) == "" {
			active = append(active, r)
		}
	}
	if !due.IsZero() {
		runName := name + "-" + strconv.FormatInt(due.Unix()/60, 10)
		switch {
		case slices.ContainsFunc(list, func(r *run) bool { return r.name == runName }):
		case c.Spec.ConcurrencyPolicy == batchv1.ForbidConcurrent && len(active) > 0:
			reasons = append(reasons, fmt.Sprintf("run for %s waits: concurrencyPolicy Forbid and %s is still running", due.UTC().Format(time.RFC3339), active[0].name))
		default:
			if c.Spec.ConcurrencyPolicy == batchv1.ReplaceConcurrent {
				for _, r := range active {
					r.stopWhy = "concurrencyPolicy Replace: replaced by " + runName
				}
			}
			r := &run{name: runName, scheduled: due}
			list = append(list, r)
			runJob(r)
			cm.LastScheduleTime = due
			reasons = append(reasons, "start "+runName+" for "+due.UTC().Format(time.RFC3339))
		}
	}

	var succeeded, failed []*run
	for _, r := range list {
		if r.stopWhy != "" {
			continue
		}
		jm := p.next[Owner{Kind: "Job", Namespace: ns, Name: r.name}.String()].Job
		switch jm.Finished {
		case "Complete":
			succeeded = append(succeeded, r)
			if jm.CompletionTime.After(cm.LastSuccessfulTime) {
				cm.LastSuccessfulTime = jm.CompletionTime
			}
		case "Failed":
			failed = append(failed, r)
		default:
			st.ActiveJobs = append(st.ActiveJobs, r.name)
		}
	}
	trim := func(rs []*run, limit *int32, what string) {
		keep := 0
		if limit != nil {
			keep = int(*limit)
		}
		for i := 0; i < len(rs)-keep; i++ {
			rs[i].stopWhy = fmt.Sprintf("%sJobsHistoryLimit %d", what, keep)
		}
	}
	trim(succeeded, c.Spec.SuccessfulJobsHistoryLimit, "successful")
	trim(failed, c.Spec.FailedJobsHistoryLimit, "failed")
	// The newest run stays while any older one does: its pods are where a
	// controller that lost its memory reads how far the schedule got.
	if n := len(list); n > 1 && list[n-1].stopWhy != "" && !strings.HasPrefix(list[n-1].stopWhy, "concurrencyPolicy") {
		for _, r := range list[:n-1] {
			if r.stopWhy == "" {
				list[n-1].stopWhy = ""
				break
			}
		}
	}

	cm.Runs = cm.Runs[:0]
	var dropped []string
	for _, r := range list {
		jo := Owner{Kind: "Job", Namespace: ns, Name: r.name}
		if r.stopWhy == "" {
			cm.Runs = append(cm.Runs, CronRun{Name: r.name, Scheduled: r.scheduled})
			continue
		}
		// Forget the Job; stop its pods.
		delete(p.next, jo.String())
		pods := p.pods(jo)
		jb := newBuilder(jo)
		for _, o := range pods {
			jb.stop(o, r.stopWhy)
		}
		w := jb.finish(pods, "removed: "+r.stopWhy)
		if i, ok := jobs[r.name]; ok {
			out[i] = w
		} else {
			out = append(out, w)
		}
		dropped = append(dropped, r.name)
	}
	if len(dropped) > 0 && len(dropped) <= 3 {
		reasons = append(reasons, "remove "+strings.Join(dropped, ", "))
	} else if len(dropped) > 3 {
		reasons = append(reasons, fmt.Sprintf("remove %d old Jobs", len(dropped)))
	}
	slices.Sort(st.ActiveJobs)
	st.Active = int32(len(st.ActiveJobs))
	if !cm.LastScheduleTime.IsZero() {
		t := cm.LastScheduleTime
		st.LastScheduleTime = &t
	}
	if !cm.LastSuccessfulTime.IsZero() {
		t := cm.LastSuccessfulTime
		st.LastSuccessfulTime = &t
	}
	if len(reasons) == 0 {
		switch {
		case st.NextScheduleTime != nil && len(st.ActiveJobs) > 0:
			reasons = append(reasons, fmt.Sprintf("%d active; next run %s", len(st.ActiveJobs), st.NextScheduleTime.UTC().Format(time.RFC3339)))
		case st.NextScheduleTime != nil:
			reasons = append(reasons, "next run "+st.NextScheduleTime.UTC().Format(time.RFC3339))
		}
	}
	if *orFalse(c.Spec.Suspend) {
		st.Conditions = p.conditions(mem, Condition{Type: "Suspended", Status: corev1.ConditionTrue, Reason: "CronJobSuspended"})
	} else {
		st.Conditions = p.conditions(mem)
	}
	self := b.finish(nil, strings.Join(reasons, "; "))
	return append([]Workload{self}, out...)
}

// scheduledOf reads the scheduled time from a CronJob's Job name.
func scheduledOf(cronJob, job string) (time.Time, bool) {
	s, ok := strings.CutPrefix(job, cronJob+"-")
	if !ok {
		return time.Time{}, false
	}
	m, err := strconv.ParseInt(s, 10, 64)
	if err != nil || m < 0 {
		return time.Time{}, false
	}
	return time.Unix(m*60, 0).UTC(), true
}

// mostRecent returns the latest schedule time in (earliest, now] (zero if
// none) and how many there are, counting exactly up to a few hundred and
// estimating beyond.
func mostRecent(s cron.Schedule, earliest, now time.Time) (time.Time, int) {
	t := s.Next(earliest)
	if t.IsZero() || t.After(now) {
		return time.Time{}, 0
	}
	var last time.Time
	n := 0
	for ; !t.IsZero() && !t.After(now); t = s.Next(t) {
		last = t
		n++
		if n == 4*tooManyMissed {
			break
		}
	}
	if n < 4*tooManyMissed {
		return last, n
	}
	// Far behind: find a point shortly before now from which the last
	// schedule can be reached in few steps, doubling the look-back.
	interval := s.Next(s.Next(earliest)).Sub(s.Next(earliest))
	for back := time.Minute; ; back *= 2 {
		from := now.Add(-back)
		if !from.After(last) {
			from = last
		}
		if u := s.Next(from); !u.IsZero() && !u.After(now) {
			for ; !u.IsZero() && !u.After(now); u = s.Next(u) {
				last = u
			}
			break
		}
		if !from.After(last) {
			break
		}
	}
	if interval > 0 {
		n = max(n, int(now.Sub(earliest)/interval))
	}
	return last, n
}
