package workload

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// deployment runs one Deployment: revisions by template hash, scaling,
// RollingUpdate (maxSurge, maxUnavailable, minReadySeconds,
// progressDeadlineSeconds, paused) and Recreate, the way Kubernetes'
// deployment controller drives its ReplicaSets, with a revision being the
// set of pods carrying one pod-template-hash.
func (p *pass) deployment(d *appsv1.Deployment, ns, name string) Workload {
	owner, pods, mem, b := p.start(Owner{Kind: "Deployment", Namespace: ns, Name: name})

	R := replicasOf(d.Spec.Replicas)
	hash := p.opts.TemplateHash(&d.Spec.Template)
	minReady := d.Spec.MinReadySeconds
	rev := p.revisions(mem, hash, pods, d.Spec.RevisionHistoryLimit)

	var maxSurge, maxUnav int32
	recreate := d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType
	if !recreate {
		var ru appsv1.RollingUpdateDeployment
		if d.Spec.Strategy.RollingUpdate != nil {
			ru = *d.Spec.Strategy.RollingUpdate
		}
		quarter := intOrPercent{n: 25, percent: true}
		var err error
		maxSurge, maxUnav, err = bounds(ru.MaxSurge, ru.MaxUnavailable, quarter, quarter, R)
		if err != nil {
			return b.invalid(pods, err)
		}
	}

	tmpl := stamp(&d.Spec.Template, map[string]string{
		LabelOwnerKind: owner.Kind, LabelOwnerName: name, LabelPodTemplateHash: hash,
	}, nil)

	// Classify.
	var newPods, oldPods []*obs
	var terminating, terminatingOld int32
	taken := make(map[string]bool, len(pods))
	for _, o := range pods {
		taken[o.Name] = true
		switch {
		case o.Terminating:
			// Stopping pods hold their place in the surge, unless their
			// machine cannot be reached to finish stopping them.
			if !o.lost && !o.frozen {
				terminating++
				if o.hash != hash {
					terminatingOld++
				}
			}
		case o.lost:
		case o.terminal:
			b.stop(o, fmt.Sprintf("pod %s; a Deployment's pods are replaced", o.Phase))
		case o.hash == hash:
			newPods = append(newPods, o)
		default:
			oldPods = append(oldPods, o)
		}
	}
	var readyAll int32
	isAvail := make(map[*obs]bool, len(newPods)+len(oldPods))
	countAvailable := func(pods []*obs) (n int32) {
		for _, o := range pods {
			if p.available(o, minReady) {
				n++
				isAvail[o] = true
			}
			if o.ready {
				readyAll++
			}
		}
		return n
	}
	availNew, availOld := countAvailable(newPods), countAvailable(oldPods)

	// Progress: any change of the counters restarts the deadline.
	cur := Progress{Hash: hash, Replicas: int32(len(newPods) + len(oldPods)), Updated: int32(len(newPods)), Available: availNew + availOld, Old: int32(len(oldPods)), Since: p.now}
	cur.Desired = R
	if pr := mem.Progress; pr != nil && pr.Hash == cur.Hash && pr.Desired == cur.Desired && pr.Replicas == cur.Replicas && pr.Updated == cur.Updated && pr.Available == cur.Available && pr.Old == cur.Old {
		cur.Since = pr.Since
	}
	mem.Progress = &cur
	complete := int32(len(newPods)) == R && len(oldPods) == 0 && availNew == R && terminating == 0
	stalled := false
	if !complete && !d.Spec.Paused && d.Spec.ProgressDeadlineSeconds != nil {
		deadline := cur.Since.Add(time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second)
		if !p.now.Before(deadline) {
			stalled = true
		} else {
			p.wakeAt(deadline)
		}
	}

	current := func(o *obs) { b.keep(o, tmpl, "") }
	old := func(o *obs) { b.keep(o, nil, "") }
	var created []string
	var stopped []*obs
	createNew := func(n int32, why string) {
		for slot := 0; n > 0; slot++ {
			pn := fmt.Sprintf("%s-%s-%s", name, hash, suffix(fmt.Sprintf("%s/%s/%d", name, hash, slot)))
			if taken[pn] {
				continue
			}
			taken[pn] = true
			b.add(pn, hash, tmpl, "", nil, why)
			created = append(created, pn)
			n--
		}
	}
	stopPod := func(o *obs, why string) {
		b.stop(o, why)
		stopped = append(stopped, o)
	}
	// scaleNew keeps at most target of the current revision's pods.
	scaleNew := func(target int32) {
		if int32(len(newPods)) <= target {
			for _, o := range newPods {
				current(o)
			}
			createNew(target-int32(len(newPods)), fmt.Sprintf("revision %d: %d of %d replicas", rev, target, R))
			return
		}
		// Scaling down may also stop pods on an unreachable machine (as
		// not ready, they go first): nothing replaces them.
		excess := int32(len(newPods)) - target
		for _, o := range slices.SortedFunc(slices.Values(newPods), deleteFirst) {
			if excess == 0 {
				break
			}
			stopPod(o, fmt.Sprintf("scale down to %d replicas", R))
			excess--
		}
		for _, o := range newPods {
			if b.stopWhy[o.Name] == "" {
				current(o)
			}
		}
	}

	var reason string
	switch {
	case d.Spec.Paused:
		// Paused: no rollout, but scaling, as Kubernetes scales a paused
		// Deployment; with no old revision's template in git, only the
		// current revision grows (when it is the only one). A Deployment
		// paused before it ever ran starts nothing, as in Kubernetes.
		for _, o := range oldPods {
			old(o)
		}
		if len(oldPods) == 0 && len(newPods) > 0 {
			scaleNew(R)
		} else {
			scaleNew(min(R, int32(len(newPods))))
		}
		reason = "paused"
	case stalled:
		for _, o := range newPods {
			current(o)
		}
		for _, o := range oldPods {
			old(o)
		}
		reason = fmt.Sprintf("progress deadline exceeded: no progress for %ds (%d/%d updated, %d available); not advancing", *d.Spec.ProgressDeadlineSeconds, len(newPods), R, availNew+availOld)
	case recreate && (len(oldPods) > 0 || terminatingOld > 0):
		for _, o := range oldPods {
			if o.frozen {
				old(o)
				continue
			}
			stopPod(o, fmt.Sprintf("recreate: old revision %s stops before revision %d starts", o.hash, rev))
		}
		for _, o := range newPods {
			current(o)
		}
		if len(stopped) > 0 {
			reason = fmt.Sprintf("recreate: stopping %d old pods", len(stopped))
		} else {
			reason = "recreate: waiting for old pods to stop"
		}
	case recreate:
		scaleNew(R)
	default:
		// Rolling update: scale the new revision up within the surge,
		// then the old ones down within the unavailability budget.
		total := int32(len(newPods)+len(oldPods)) + terminating
		target := int32(len(newPods))
		if target < R {
			target = min(R, target+max(0, R+maxSurge-total))
		} else {
			target = R
		}
		scaleNew(target)
		newUnavailable := target - availNew
		minAvailable := R - maxUnav
		maxDown := target + int32(len(oldPods)) - minAvailable - newUnavailable
		ranked := removable(oldPods)
		byRev := func(a, b *obs) int {
			return cmp.Or(cmp.Compare(p.revisionOf(mem, a.hash), p.revisionOf(mem, b.hash)), deleteFirst(a, b))
		}
		slices.SortStableFunc(ranked, byRev)
		// Unhealthy old pods first: they hold nothing up.
		for _, o := range ranked {
			if maxDown <= 0 {
				break
			}
			if !isAvail[o] {
				stopPod(o, fmt.Sprintf("rolling update: old revision %s, not available", o.hash))
				maxDown--
			}
		}
		// Then available ones, keeping minAvailable available.
		canStop := availNew + availOld - minAvailable
		if maxDown > 0 {
			for _, o := range ranked {
				if canStop <= 0 {
					break
				}
				if isAvail[o] {
					stopPod(o, fmt.Sprintf("rolling update: old revision %s; %d available, %d required", o.hash, availNew+availOld, minAvailable))
					canStop--
				}
			}
		}
		for _, o := range oldPods {
			if b.stopWhy[o.Name] == "" {
				old(o)
			}
		}
	}

	// Status.
	st := &b.w.Status
	st.Replicas = int32(len(newPods) + len(oldPods))
	st.UpdatedReplicas = int32(len(newPods))
	st.ReadyReplicas = readyAll
	st.AvailableReplicas = availNew + availOld
	st.UnavailableReplicas = max(0, R-st.AvailableReplicas)
	st.Revision = rev
	st.UpdateRevision = hash
	avail := Condition{Type: "Available", Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable", Message: "Deployment has minimum availability."}
	if st.AvailableReplicas < R-maxUnav {
		avail = Condition{Type: "Available", Status: corev1.ConditionFalse, Reason: "MinimumReplicasUnavailable", Message: "Deployment does not have minimum availability."}
	}
	var prog Condition
	switch {
	default:
		prog = Condition{Type: "Progressing", Status: corev1.ConditionTrue, Reason: "ReplicaSetUpdated", Message: fmt.Sprintf("revision %d (%s) is progressing", rev, hash)}
	case complete:
		prog = Condition{Type: "Progressing", Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable", Message: fmt.Sprintf("revision %d (%s) has successfully progressed", rev, hash)}
	case d.Spec.Paused:
		prog = Condition{Type: "Progressing", Status: corev1.ConditionUnknown, Reason: "DeploymentPaused", Message: "Deployment is paused"}
	case stalled:
		prog = Condition{Type: "Progressing", Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded", Message: fmt.Sprintf("revision %d (%s) has timed out progressing", rev, hash)}
	}
	st.Conditions = p.conditions(mem, avail, prog)

	if reason == "" {
		reason = deploymentReason(R, newPods, created, stopped, maxSurge, complete, recreate, p, oldPods, isAvail, minReady)
	}
	return b.finish(pods, reason)
}

func deploymentReason(R int32, newPods []*obs, created []string, stopped []*obs, surge int32, complete, recreate bool, p *pass, oldPods []*obs, isAvail map[*obs]bool, minReady int32) string {
	if complete {
		return fmt.Sprintf("%d/%d replicas up to date and available", R, R)
	}
	var parts []string
	if len(created) > 0 {
		parts = append(parts, fmt.Sprintf("start %s", strings.Join(created, ", ")))
	}
	if len(stopped) > 0 {
		parts = append(parts, "stop "+names(stopped))
	}
	if len(created) == 0 && len(stopped) == 0 {
		parts = append(parts, waitingFor(p, newPods, oldPods, isAvail, minReady))
	}
	what := "rolling update"
	switch {
	case recreate:
		what = "recreate"
	case len(oldPods) == 0:
		what = "scale"
	}
	return fmt.Sprintf("%s %d/%d: surge %d, %s", what, len(newPods), R, surge, strings.Join(parts, "; "))
}

// waitingFor names the first pod a rollout waits for.
func waitingFor(p *pass, newPods, oldPods []*obs, isAvail map[*obs]bool, minReady int32) string {
	for _, o := range append(slices.Clone(newPods), oldPods...) {
		switch {
		case o.frozen:
			return fmt.Sprintf("waiting for machine %s (unreachable; %s unknown)", o.Machine, o.Name)
		case !o.ready:
			return "waiting for " + o.Name + " to be ready"
		case !isAvail[o]:
			return fmt.Sprintf("waiting for %s to be ready for %ds", o.Name, minReady)
		}
	}
	return "waiting for pods to stop"
}

// revisions numbers the Deployment's template hashes: the current one
// gets the next number when first seen; hashes seen only in pods (memory
// lost) are numbered first, oldest pod first. It keeps the current
// revision, those with pods, and revisionHistoryLimit others.
func (p *pass) revisions(mem *WorkloadMemory, hash string, pods []*obs, limit *int32) int64 {
	known := func(h string) bool {
		return slices.ContainsFunc(mem.Revisions, func(r Revision) bool { return r.Hash == h })
	}
	next := func() int64 {
		var n int64
		for _, r := range mem.Revisions {
			n = max(n, r.Number)
		}
		return n + 1
	}
	first := map[string]time.Time{}
	for _, o := range pods {
		if o.hash == "" || o.hash == hash || known(o.hash) {
			continue
		}
		if t, ok := first[o.hash]; !ok || o.Created.Before(t) {
			first[o.hash] = o.Created
		}
	}
	unknown := make([]string, 0, len(first))
	for h := range first {
		unknown = append(unknown, h)
	}
	slices.SortFunc(unknown, func(a, b string) int { return cmp.Or(first[a].Compare(first[b]), cmp.Compare(a, b)) })
	for _, h := range unknown {
		mem.Revisions = append(mem.Revisions, Revision{Hash: h, Number: next(), Since: first[h]})
	}
	if i := slices.IndexFunc(mem.Revisions, func(r Revision) bool { return r.Hash == hash }); i >= 0 {
		// Back to an older template (git revert): it becomes the newest
		// revision again, as in Kubernetes.
		if r := mem.Revisions[i]; r.Number != next()-1 {
			mem.Revisions = slices.Delete(mem.Revisions, i, i+1)
			mem.Revisions = append(mem.Revisions, Revision{Hash: hash, Number: next(), Since: p.now})
		}
	} else {
		mem.Revisions = append(mem.Revisions, Revision{Hash: hash, Number: next(), Since: p.now})
	}
	// Prune history.
	keep := int32(10)
	if limit != nil {
		keep = *limit
	}
	inUse := map[string]bool{hash: true}
	for _, o := range pods {
		inUse[o.hash] = true
	}
	var kept []Revision
	spare := keep
	for i := len(mem.Revisions) - 1; i >= 0; i-- {
		r := mem.Revisions[i]
		switch {
		case inUse[r.Hash]:
		case spare > 0:
			spare--
		default:
			continue
		}
		kept = append(kept, r)
	}
	slices.Reverse(kept)
	mem.Revisions = kept
	return mem.Revisions[len(mem.Revisions)-1].Number
}

// revisionOf is a hash's revision number, 0 when unknown (oldest).
func (p *pass) revisionOf(mem *WorkloadMemory, hash string) int64 {
	for _, r := range mem.Revisions {
		if r.Hash == hash {
			return r.Number
		}
	}
	return 0
}
