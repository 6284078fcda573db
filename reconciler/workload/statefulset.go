package workload

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// statefulSet runs one StatefulSet the way Kubernetes' StatefulSet
// controller does: pods <name>-<ordinal>; OrderedReady creates them one at
// a time in order, each Running and Ready before the next, and removes
// them from the highest ordinal down; Parallel does both at once; a
// RollingUpdate replaces one pod at a time from the highest ordinal down
// to the partition, each waiting for the previous to be Running and
// Ready; OnDelete only gives new pods the new template. A replaced pod
// keeps its name and its machine.
func (p *pass) statefulSet(s *appsv1.StatefulSet, ns, name string) Workload {
	owner, pods, mem, b := p.start(Owner{Kind: "StatefulSet", Namespace: ns, Name: name})
	mem.Conditions = nil

	R := replicasOf(s.Spec.Replicas)
	start := int32(0)
	if s.Spec.Ordinals != nil {
		start = max(s.Spec.Ordinals.Start, 0)
	}
	hash := p.opts.TemplateHash(&s.Spec.Template)
	monotonic := s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement
	rolling := s.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType
	partition := int32(0)
	if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil {
		partition = max(*ru.Partition, 0)
	}
	minReady := s.Spec.MinReadySeconds

	podName := func(ord int32) string { return name + "-" + itoa(ord) }
	tmplFor := func(ord int32) *corev1.PodTemplateSpec {
		pn := podName(ord)
		t := stamp(&s.Spec.Template, map[string]string{
			LabelOwnerKind: owner.Kind, LabelOwnerName: name, LabelControllerRevision: hash,
			LabelStatefulSetPodName: pn, LabelPodIndex: itoa(ord),
		}, nil)
		t.Spec.Hostname = pn
		if s.Spec.ServiceName != "" {
			t.Spec.Subdomain = s.Spec.ServiceName
		}
		return t
	}

	// Index the observed pods by ordinal.
	type slot struct {
		pod     *obs // the live pod, if any
		waiting bool // a terminating or finished pod still holds the name
	}
	slots := map[int32]*slot{}
	var condemned []int32 // ordinals outside the range, live
	for _, o := range pods {
		ord, ok := ordinalOf(name, o.Name)
		if !ok {
			b.stop(o, "not an ordinal pod of "+owner.String())
			continue
		}
		sl := slots[ord]
		if sl == nil {
			sl = &slot{}
			slots[ord] = sl
		}
		switch {
		case o.lost:
		case o.Terminating:
			sl.waiting = true
		case o.terminal:
			sl.waiting = true
			b.stop(o, fmt.Sprintf("pod %s; a StatefulSet recreates it", o.Phase))
		default:
			sl.pod = o
			if ord < start || ord >= start+R {
				condemned = append(condemned, ord)
			}
		}
	}
	slices.Sort(condemned)
	healthy := func(o *obs) bool { return o != nil && o.ready && p.available(o, minReady) }

	decided := map[int32]bool{}
	var actions []string
	var waitFor string
	blocked := false
	wait := func(why string) {
		if waitFor == "" {
			waitFor = why
		}
		if monotonic {
			blocked = true
		}
	}
	// Create or wait for each ordinal in order.
	for ord := start; ord < start+R && !blocked; ord++ {
		sl := slots[ord]
		switch {
		case sl == nil || sl.pod == nil && !sl.waiting:
			b.add(podName(ord), hash, tmplFor(ord), "", nil, fmt.Sprintf("ordinal %d of %d", ord, R))
			decided[ord] = true
			actions = append(actions, "start "+podName(ord))
			wait(podName(ord) + " to be Running and Ready")
		case sl.pod == nil:
			wait(podName(ord) + " to stop before it is recreated")
		case !healthy(sl.pod):
			if sl.pod.frozen {
				wait(fmt.Sprintf("machine %s (unreachable; %s unknown)", sl.pod.Machine, sl.pod.Name))
			} else {
				wait(sl.pod.Name + " to be Running and Ready")
			}
		}
	}
	// Scale down from the highest ordinal. Ordered: one at a time, once
	// the pods that stay are healthy, and no other pod going is stopping
	// or unhealthy.
	if monotonic && !blocked {
		for _, ord := range slices.Sorted(maps.Keys(slots)) {
			sl := slots[ord]
			if ord >= start && ord < start+R {
				continue
			}
			if sl.waiting {
				wait(podName(ord) + " to stop")
			} else if n := len(condemned); sl.pod != nil && n > 0 && ord != condemned[n-1] && !healthy(sl.pod) {
				wait(sl.pod.Name + " to be Running and Ready before scaling down")
			}
		}
	}
	if !blocked {
		for i := len(condemned) - 1; i >= 0; i-- {
			o := slots[condemned[i]].pod
			if o.frozen {
				wait(fmt.Sprintf("machine %s to remove %s", o.Machine, o.Name))
				break
			}
			b.stop(o, fmt.Sprintf("scale down to %d replicas, highest ordinal first", R))
			decided[condemned[i]] = true
			actions = append(actions, "stop "+o.Name)
			if monotonic {
				break
			}
		}
	}
	// Roll out from the highest ordinal down to the partition, one pod at
	// a time, once every pod is Running and Ready.
	if rolling && waitFor == "" && len(actions) == 0 {
		for ord := start + R - 1; ord >= start+partition; ord-- {
			o := slots[ord].pod
			if o.hash == hash {
				continue
			}
			b.add(o.Name, hash, tmplFor(ord), o.Machine, o, fmt.Sprintf("rolling update from the highest ordinal, partition %d", partition))
			decided[ord] = true
			actions = append(actions, "replace "+o.Name)
			break
		}
	}
	// Everything else stays as it is.
	for ord, sl := range slots {
		if sl.pod == nil || decided[ord] {
			continue
		}
		if sl.pod.hash == hash {
			b.keep(sl.pod, tmplFor(ord), "")
		} else {
			b.keep(sl.pod, nil, "")
		}
	}

	// Status.
	st := &b.w.Status
	revs := map[string]int32{}
	for _, sl := range slots {
		o := sl.pod
		if o == nil {
			continue
		}
		st.Replicas++
		revs[o.hash]++
		if o.hash == hash {
			st.UpdatedReplicas++
		}
		if o.ready {
			st.ReadyReplicas++
		}
		if healthy(o) {
			st.AvailableReplicas++
		}
	}
	st.UpdateRevision = hash
	st.CurrentRevision = hash
	if revs[hash] < st.Replicas {
		// The revision most pods run, other than the update.
		best := slices.SortedFunc(maps.Keys(revs), func(a, b string) int { return cmp.Or(-cmp.Compare(revs[a], revs[b]), cmp.Compare(a, b)) })
		for _, h := range best {
			if h != hash {
				st.CurrentRevision = h
				break
			}
		}
	}
	st.UnavailableReplicas = max(0, R-st.AvailableReplicas)

	var reason string
	switch {
	case len(actions) > 0:
		reason = strings.Join(actions, ", ")
		if waitFor != "" && !strings.HasPrefix(actions[0], "start") {
			reason += "; waiting for " + waitFor
		}
	case waitFor != "":
		reason = "waiting for " + waitFor
	case st.UpdatedReplicas < R && rolling:
		reason = fmt.Sprintf("%d/%d updated; partition %d holds the rest", st.UpdatedReplicas, R, partition)
	case st.UpdatedReplicas < R:
		reason = fmt.Sprintf("%d/%d updated; OnDelete: pods take the new template when deleted", st.UpdatedReplicas, R)
	default:
		reason = fmt.Sprintf("%d/%d replicas up to date and ready", R, R)
	}
	if monotonic && len(actions) > 0 && strings.HasPrefix(actions[0], "start") {
		reason = "ordered: " + reason
	}
	return b.finish(pods, reason)
}

// ordinalOf parses "<name>-<ordinal>".
func ordinalOf(name, pod string) (int32, bool) {
	s, ok := strings.CutPrefix(pod, name+"-")
	if !ok || s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 32)
	return int32(n), err == nil && n >= 0
}
