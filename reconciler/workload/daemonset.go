package workload

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// daemonSet runs one DaemonSet: one pod on every eligible machine
// (Options.Eligible), none elsewhere, and a rolling update within
// maxUnavailable (the old pod is replaced in place, under the same name,
// so the agent stops it before starting the new one) or, with maxSurge,
// a second pod started beside the old one, which stops once the new one
// is available.
func (p *pass) daemonSet(d *appsv1.DaemonSet, ns, name string) Workload {
	owner, pods, mem, b := p.start(Owner{Kind: "DaemonSet", Namespace: ns, Name: name})
	mem.Conditions = nil

	hash := p.opts.TemplateHash(&d.Spec.Template)
	minReady := d.Spec.MinReadySeconds
	tmplFor := func(machine string) *corev1.PodTemplateSpec {
		t := stamp(&d.Spec.Template, map[string]string{
			LabelOwnerKind: owner.Kind, LabelOwnerName: name, LabelControllerRevision: hash,
		}, nil)
		t.Spec.NodeName = machine
		return t
	}

	var eligible []string
	isEligible := map[string]bool{}
	for _, m := range p.machineList {
		if p.opts.Eligible == nil || p.opts.Eligible(&d.Spec.Template.Spec, m) {
			eligible = append(eligible, m.Name)
			isEligible[m.Name] = true
		}
	}
	N := int32(len(eligible))

	rolling := d.Spec.UpdateStrategy.Type != appsv1.OnDeleteDaemonSetStrategyType
	var maxSurge, maxUnav int32
	if rolling {
		var ru appsv1.RollingUpdateDaemonSet
		if d.Spec.UpdateStrategy.RollingUpdate != nil {
			ru = *d.Spec.UpdateStrategy.RollingUpdate
		}
		var err error
		maxSurge, maxUnav, err = bounds(ru.MaxSurge, ru.MaxUnavailable, intOrPercent{}, intOrPercent{n: 1}, N)
		if err != nil {
			return b.invalid(pods, err)
		}
	}

	// Pods by machine.
	type node struct {
		live        []*obs // active pods
		terminating []*obs
	}
	nodes := map[string]*node{}
	var misscheduled int32
	for _, o := range pods {
		switch {
		case o.lost:
			continue
		case !isEligible[o.Machine]:
			if !o.Terminating && !o.frozen {
				misscheduled++
				b.stop(o, "machine "+o.Machine+" is not eligible for "+owner.String())
				continue
			}
		case o.terminal:
			b.stop(o, fmt.Sprintf("pod %s; a DaemonSet replaces it", o.Phase))
			continue
		}
		n := nodes[o.Machine]
		if n == nil {
			n = &node{}
			nodes[o.Machine] = n
		}
		if o.Terminating {
			n.terminating = append(n.terminating, o)
		} else if isEligible[o.Machine] || o.frozen {
			n.live = append(n.live, o)
		}
	}

	// A machine's pod is <name>-<suffix of the machine>; while that name
	// is taken (the old pod surges, or still stops), the suffix derives
	// from the machine and the template hash.
	taken := make(map[string]bool, len(pods))
	for _, o := range pods {
		taken[o.Name] = true
	}
	newName := func(m string) string {
		pn := name + "-" + suffix(m)
		for i := 0; taken[pn]; i++ {
			key := m + "/" + hash
			if i > 0 {
				key += "/" + strconv.Itoa(i)
			}
			pn = name + "-" + suffix(key)
		}
		taken[pn] = true
		return pn
	}

	st := &b.w.Status
	st.DesiredNumberScheduled = N
	st.NumberMisscheduled = misscheduled
	st.UpdateRevision = hash

	var unavailable int32
	type pending struct {
		m   string
		old *obs
	}
	var toUpdate []pending
	var actions []string
	var waits []string
	for _, m := range eligible {
		n := nodes[m]
		if n == nil {
			n = &node{}
		}
		mach := p.machines[m]
		var cur, old *obs
		// The best pod of each revision stays (the reverse of deleteFirst).
		for _, o := range slices.Backward(removable(n.live)) {
			switch {
			case o.hash == hash && cur == nil:
				cur = o
			case o.hash != hash && old == nil:
				old = o
			default:
				b.stop(o, "more than one pod on machine "+m)
			}
		}
		for _, o := range n.live {
			if o.frozen {
				b.keep(o, nil, "machine unreachable")
				if o.hash == hash && cur == nil {
					cur = o
				}
			}
		}
		if len(n.live) > 0 {
			st.Replicas++
		}
		curAvail := cur != nil && p.available(cur, minReady)
		oldAvail := old != nil && p.available(old, minReady)
		if cur != nil {
			st.UpdatedReplicas++
			if cur.ready {
				st.ReadyReplicas++
			}
		} else if old != nil && old.ready {
			st.ReadyReplicas++
		}
		if curAvail || oldAvail {
			st.AvailableReplicas++
		} else {
			unavailable++
		}
		switch {
		case !mach.Reachable:
			waits = append(waits, "machine "+m+" (unreachable)")
		case cur == nil && old == nil:
			if len(n.terminating) > 0 && !(maxSurge > 0) {
				waits = append(waits, n.terminating[0].Name+" to stop")
				break
			}
			pn := newName(m)
			b.add(pn, hash, tmplFor(m), m, nil, "machine "+m+" is eligible")
			actions = append(actions, "start "+pn)
		case cur != nil && old == nil:
			b.keep(cur, tmplFor(m), "")
			if !curAvail {
				waits = append(waits, cur.Name+" to be available")
			}
		case cur != nil && old != nil:
			b.keep(cur, tmplFor(m), "")
			if curAvail {
				b.stop(old, "surge pod "+cur.Name+" is available")
				actions = append(actions, "stop "+old.Name)
			} else {
				b.keep(old, nil, "")
				waits = append(waits, cur.Name+" to be available")
			}
		case !rolling:
			b.keep(old, nil, "")
		default:
			toUpdate = append(toUpdate, pending{m, old})
		}
	}
	// Rolling update of machines still on an old revision: unavailable
	// old pods first (they cost nothing), then within the budget.
	var surging int32
	for _, m := range eligible {
		if n := nodes[m]; n != nil {
			var c, o bool
			for _, x := range n.live {
				c = c || x.hash == hash
				o = o || x.hash != hash
			}
			if c && o {
				surging++
			}
		}
	}
	for pass := 0; pass < 2; pass++ {
		for _, u := range toUpdate {
			if u.old == nil {
				continue
			}
			avail := p.available(u.old, minReady)
			if (pass == 0) == avail {
				continue
			}
			replace := func(why string) {
				if maxSurge > 0 && avail {
					pn := newName(u.m)
					b.keep(u.old, nil, "")
					b.add(pn, hash, tmplFor(u.m), u.m, nil, why)
					actions = append(actions, "start "+pn+" beside "+u.old.Name)
				} else {
					b.add(u.old.Name, hash, tmplFor(u.m), u.m, u.old, why)
					actions = append(actions, "replace "+u.old.Name)
				}
			}
			switch {
			case !avail:
				replace("rolling update: old pod not available")
			case maxSurge > 0 && surging < maxSurge:
				surging++
				replace(fmt.Sprintf("rolling update: surge %d", maxSurge))
			case maxSurge == 0 && unavailable < maxUnav:
				unavailable++
				replace(fmt.Sprintf("rolling update: %d of %d may be unavailable", unavailable, maxUnav))
			default:
				b.keep(u.old, nil, "")
			}
		}
	}
	st.UnavailableReplicas = max(0, N-st.AvailableReplicas)
	if len(waits) > 3 {
		waits = append(waits[:3], fmt.Sprintf("%d more", len(waits)-3))
	}
	var reason string
	switch {
	case len(actions) > 0:
		reason = strings.Join(actions, ", ")
	case len(waits) > 0:
		reason = "waiting for " + strings.Join(waits, ", ")
	case !rolling && st.UpdatedReplicas < N:
		reason = fmt.Sprintf("%d/%d updated; OnDelete", st.UpdatedReplicas, N)
	default:
		reason = fmt.Sprintf("%d/%d machines up to date and available", st.AvailableReplicas, N)
	}
	if rolling && st.UpdatedReplicas < N {
		reason = fmt.Sprintf("rolling update %d/%d: surge %d, unavailable %d; %s", st.UpdatedReplicas, N, maxSurge, maxUnav, reason)
	}
	return b.finish(pods, reason)
}
