package workload

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// Backoff between a Job's failed pod and its replacement, as the Job
// controller's: 10 s doubled per failure, at most 6 min.
const (
	jobBackoffBase = 10 * time.Second
	jobBackoffMax  = 6 * time.Minute
)

// job runs one Job (written as such, or started by a CronJob; labels and
// annotations are added to its pods). Finished pods stay (they are the
// record of what succeeded and failed, so a controller without memory
// counts them again) until the Job is finished and
// ttlSecondsAfterFinished has passed.
func (p *pass) job(spec *batchv1.JobSpec, owner Owner, labels, annotations map[string]string) Workload {
	_, pods, mem, b := p.start(owner)
	if mem.Job == nil {
		mem.Job = &JobMemory{}
	}
	jm := mem.Job
	st := &b.w.Status

	hash := p.opts.TemplateHash(&spec.Template)
	indexed := spec.CompletionMode != nil && *spec.CompletionMode == batchv1.IndexedCompletion
	parallelism := int32(1)
	if spec.Parallelism != nil {
		parallelism = max(*spec.Parallelism, 0)
	}
	backoffLimit := int32(6)
	if spec.BackoffLimit != nil {
		backoffLimit = *spec.BackoffLimit
	}
	if indexed && spec.Completions == nil {
		return b.invalid(pods, fmt.Errorf("an Indexed Job needs completions"))
	}

	// Count.
	var active, done []*obs
	var succeeded, failed int32
	doneIdx := map[int]bool{}
	activeIdx := map[int][]*obs{}
	var lastFailure, firstCreated time.Time
	for _, o := range pods {
		if !o.Created.IsZero() && (firstCreated.IsZero() || o.Created.Before(firstCreated)) {
			firstCreated = o.Created
		}
		failed += o.restarts
		for _, c := range o.Containers {
			if c.ExitCode != nil && *c.ExitCode != 0 && c.FinishedAt.After(lastFailure) {
				lastFailure = c.FinishedAt
			}
		}
		idx, hasIdx := completionIndex(o)
		switch {
		case o.Phase == corev1.PodSucceeded:
			done = append(done, o)
			succeeded++
			if hasIdx {
				doneIdx[idx] = true
			}
		case o.Phase == corev1.PodFailed:
			done = append(done, o)
			failed++
		case o.active():
			active = append(active, o)
			if hasIdx {
				activeIdx[idx] = append(activeIdx[idx], o)
			}
		}
	}
	if indexed {
		succeeded = 0
		for i := range doneIdx {
			if i < int(*spec.Completions) {
				succeeded++
			}
		}
	}
	if jm.Finished != "" {
		// Counted then; pods may since have been cleaned up.
		succeeded, failed = max(succeeded, jm.Succeeded), max(failed, jm.Failed)
	}
	if jm.StartTime.IsZero() && !firstCreated.IsZero() {
		jm.StartTime = firstCreated
	}

	tmplBase := stamp(&spec.Template, mergeLabels(map[string]string{
		LabelOwnerKind: owner.Kind, LabelOwnerName: owner.Name, LabelPodTemplateHash: hash,
		LabelJobName: owner.Name, LabelBatchJobName: owner.Name,
	}, labels), annotations)
	// Finished pods stay as the Job's record (unless something already
	// stops them: wanting a stopping pod again would run it again).
	keepDone := func() {
		for _, o := range done {
			if !o.Terminating {
				b.keep(o, nil, "finished pod kept as the Job's record")
			}
		}
	}

	// Decide whether the Job ends now.
	var finish, finishReason, finishMsg string
	switch {
	case jm.Finished != "":
		finish, finishReason = jm.Finished, jm.Reason
	case *orFalse(spec.Suspend):
	case failed > backoffLimit:
		finish, finishReason, finishMsg = "Failed", "BackoffLimitExceeded", fmt.Sprintf("Job has reached the specified backoff limit (%d failures > %d)", failed, backoffLimit)
	case spec.ActiveDeadlineSeconds != nil && !jm.StartTime.IsZero() && !p.now.Before(jm.StartTime.Add(time.Duration(*spec.ActiveDeadlineSeconds)*time.Second)):
		finish, finishReason, finishMsg = "Failed", "DeadlineExceeded", fmt.Sprintf("Job was active longer than %ds", *spec.ActiveDeadlineSeconds)
	case spec.Completions != nil && succeeded >= *spec.Completions:
		finish, finishReason = "Complete", "CompletionsReached"
	case spec.Completions == nil && succeeded > 0 && len(active) == 0:
		finish, finishReason = "Complete", "CompletionsReached"
	}

	st.Succeeded, st.Failed = succeeded, failed
	if indexed {
		st.CompletedIndexes = indexRanges(doneIdx, int(*spec.Completions))
	}
	if !jm.StartTime.IsZero() {
		t := jm.StartTime
		st.StartTime = &t
	}

	if finish != "" {
		if jm.Finished == "" {
			jm.Finished, jm.Reason, jm.CompletionTime = finish, finishReason, p.now
			jm.Succeeded, jm.Failed = succeeded, failed
		}
		for _, o := range active {
			b.stop(o, "Job "+strings.ToLower(finish)+": "+finishReason)
		}
		reason := fmt.Sprintf("%s (%s): %d succeeded, %d failed", finish, finishReason, succeeded, failed)
		if ttl := spec.TTLSecondsAfterFinished; ttl != nil {
			expire := jm.CompletionTime.Add(time.Duration(*ttl) * time.Second)
			if jm.CleanedUp || !p.now.Before(expire) {
				jm.CleanedUp = true
				for _, o := range done {
					b.stop(o, fmt.Sprintf("ttlSecondsAfterFinished (%ds) passed", *ttl))
				}
				reason += "; cleaned up after ttlSecondsAfterFinished"
			} else {
				keepDone()
				p.wakeAt(expire)
			}
		} else {
			keepDone()
		}
		if finish == "Complete" {
			t := jm.CompletionTime
			st.CompletionTime = &t
		}
		if finishMsg != "" {
			reason += "; " + finishMsg
		}
		st.Conditions = p.conditions(mem, Condition{Type: finish, Status: corev1.ConditionTrue, Reason: jm.Reason, Message: jm.conditionMessage()})
		return b.finish(pods, reason)
	}

	keepDone()
	if *orFalse(spec.Suspend) {
		for _, o := range active {
			b.stop(o, "Job suspended")
		}
		jm.StartTime = time.Time{}
		st.StartTime = nil
		st.Conditions = p.conditions(mem, Condition{Type: "Suspended", Status: corev1.ConditionTrue, Reason: "JobSuspended", Message: "Job suspended"})
		return b.finish(pods, "suspended")
	}
	taken := make(map[string]bool, len(pods))
	for _, o := range pods {
		taken[o.Name] = true
	}
	// Backoff after failures.
	var notBefore time.Time
	if failed > 0 && !lastFailure.IsZero() {
		d := jobBackoffBase << min(failed-1, 10)
		notBefore = lastFailure.Add(min(d, jobBackoffMax))
	}
	backingOff := p.now.Before(notBefore)
	var actions []string
	create := func(name string, t *corev1.PodTemplateSpec, why string) bool {
		if backingOff {
			p.wakeAt(notBefore)
			return false
		}
		if jm.StartTime.IsZero() {
			jm.StartTime = p.now
			st.StartTime = &p.now
		}
		taken[name] = true
		b.add(name, hash, t, "", nil, why)
		actions = append(actions, "start "+name)
		return true
	}
	running := int32(0)
	if indexed {
		c := int(*spec.Completions)
		idxs := slices.Sorted(func(yield func(int) bool) {
			for i := range activeIdx {
				if !yield(i) {
					return
				}
			}
		})
		for _, i := range idxs {
			ps := removable(activeIdx[i])
			for j, o := range ps {
				switch {
				case doneIdx[i] || i >= c:
					b.stop(o, fmt.Sprintf("index %d already succeeded or is out of range", i))
				case j < len(ps)-1:
					b.stop(o, fmt.Sprintf("more than one pod for index %d", i))
				case running >= parallelism:
					// Lowest indexes first, as they were started.
					b.stop(o, fmt.Sprintf("parallelism %d", parallelism))
				default:
					b.keep(o, nil, "")
					running++
				}
			}
		}
		for _, o := range active {
			if _, ok := completionIndex(o); !ok {
				b.stop(o, "pod has no completion index")
			}
		}
		for i := 0; i < c && running < parallelism; i++ {
			if doneIdx[i] || len(activeIdx[i]) > 0 {
				continue
			}
			name := owner.Name + "-" + strconv.Itoa(i)
			for n := 1; taken[name]; n++ {
				name = owner.Name + "-" + strconv.Itoa(i) + "-" + strconv.Itoa(n)
			}
			t := stamp(tmplBase, map[string]string{LabelJobCompletionIndex: strconv.Itoa(i)}, map[string]string{AnnotationCompletionIndex: strconv.Itoa(i)})
			t.Spec.Hostname = owner.Name + "-" + strconv.Itoa(i)
			setEnv(t, EnvJobCompletionIndex, strconv.Itoa(i))
			if !create(name, t, fmt.Sprintf("index %d of %d", i, c)) {
				break
			}
			running++
		}
	} else {
		want := parallelism
		if spec.Completions != nil {
			want = min(want, *spec.Completions-succeeded)
		} else if succeeded > 0 {
			// A work queue: once one pod succeeded, no new ones.
			want = min(want, int32(len(active)))
		}
		ranked := removable(active)
		// Pods on an unreachable machine may well be running: they count
		// first, and go only when there are too many.
		for _, o := range active {
			switch {
			case !o.frozen:
			case running < want:
				b.keep(o, nil, "machine unreachable")
				running++
			default:
				b.stop(o, fmt.Sprintf("parallelism %d", parallelism))
			}
		}
		for _, o := range slices.Backward(ranked) {
			if running < want {
				b.keep(o, nil, "")
				running++
			} else {
				b.stop(o, fmt.Sprintf("parallelism %d", parallelism))
			}
		}
		for seq := 0; running < want; seq++ {
			name := owner.Name + "-" + suffix(owner.Name+"/"+strconv.Itoa(seq))
			if taken[name] {
				continue
			}
			if !create(name, tmplBase, fmt.Sprintf("%d of %d running, %d succeeded", running+1, want, succeeded)) {
				break
			}
			running++
		}
	}
	st.Active = running
	if spec.ActiveDeadlineSeconds != nil && !jm.StartTime.IsZero() {
		p.wakeAt(jm.StartTime.Add(time.Duration(*spec.ActiveDeadlineSeconds) * time.Second))
	}

	var reason string
	switch {
	case len(actions) > 0:
		reason = strings.Join(actions, ", ")
	case backingOff:
		reason = fmt.Sprintf("backing off after %d failures until %s", failed, notBefore.UTC().Format(time.RFC3339))
	default:
		reason = fmt.Sprintf("%d running, waiting for them to finish", running)
	}
	target := "?"
	if spec.Completions != nil {
		target = itoa(*spec.Completions)
	}
	reason = fmt.Sprintf("%d/%s succeeded, %d failed (limit %d): %s", succeeded, target, failed, backoffLimit, reason)
	st.Conditions = p.conditions(mem)
	return b.finish(pods, reason)
}

func (jm *JobMemory) conditionMessage() string {
	if jm.Finished == "Complete" {
		return "Job completed"
	}
	return "Job failed: " + jm.Reason
}

func orFalse(b *bool) *bool {
	if b == nil {
		return new(bool)
	}
	return b
}

func completionIndex(o *obs) (int, bool) {
	s, ok := o.Labels[LabelJobCompletionIndex]
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil && i >= 0
}

// indexRanges writes a set of indexes as Kubernetes' completedIndexes:
// "0-2,5".
func indexRanges(set map[int]bool, n int) string {
	var parts []string
	for i := 0; i < n; i++ {
		if !set[i] {
			continue
		}
		j := i
		for j+1 < n && set[j+1] {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(i))
		} else {
			parts = append(parts, strconv.Itoa(i)+"-"+strconv.Itoa(j))
		}
		i = j
	}
	return strings.Join(parts, ",")
}

// setEnv sets an environment variable in every container.
func setEnv(t *corev1.PodTemplateSpec, name, value string) {
	set := func(cs []corev1.Container) {
		for i := range cs {
			cs[i].Env = slices.DeleteFunc(cs[i].Env, func(e corev1.EnvVar) bool { return e.Name == name })
			cs[i].Env = append(cs[i].Env, corev1.EnvVar{Name: name, Value: value})
		}
	}
	set(t.Spec.InitContainers)
	set(t.Spec.Containers)
}

func mergeLabels(a, b map[string]string) map[string]string {
	for k, v := range b {
		a[k] = v
	}
	return a
}
