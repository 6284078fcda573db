package network

import (
	"net/netip"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
)

// holders picks the machine that holds each LoadBalancer address: the one
// that held it, while it stays healthy; else the healthy machine its
// address ranks first with (rendezvous hashing, so that a machine failing
// moves only its own addresses). With externalTrafficPolicy Local, only
// machines running a ready endpoint qualify while there are any.
func (s *state) holders() {
	sel := labels.Everything()
	if ms := s.cluster.Spec.LoadBalancer.MachineSelector; ms != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(ms); err != nil {
			s.clusterDiag(render.SeverityError, "spec.loadBalancer.machineSelector", "invalid selector: no machine holds a LoadBalancer address: %v", err)
			sel = labels.Nothing()
		}
	}
	var candidates []*machine
	for _, m := range s.machines {
		if m.healthy && sel.Matches(labels.Set(m.spec.Labels)) {
			candidates = append(candidates, m)
		}
	}
	for _, sv := range s.services {
		if !sv.lbIP.IsValid() {
			continue
		}
		cands := candidates
		if sv.out.ExternalTrafficLocal {
			var local []*machine
			for _, m := range cands {
				if slices.ContainsFunc(sv.out.Endpoints, func(e api.Endpoint) bool { return e.Machine == m.name && e.Ready }) {
					local = append(local, m)
				}
			}
			if len(local) > 0 {
				cands = local
			}
		}
		prev := s.in.Memory.Holders[sv.key]
		var holder *machine
		if i := slices.IndexFunc(cands, func(m *machine) bool { return m.name == prev }); i >= 0 {
			holder = cands[i]
		} else if len(cands) > 0 {
			holder = rendezvous(sv.lbIP, cands)
			if prev != "" {
				s.diag(render.SeverityNote, sv.obj, "spec.type", "LoadBalancer address %s moves from machine %s to %s: %s", sv.lbIP, prev, holder.name, s.whyNot(prev, sel))
			}
		} else if m := s.byName[prev]; m != nil {
			holder = m
			s.diag(render.SeverityWarning, sv.obj, "spec.type", "no healthy machine can hold LoadBalancer address %s: it stays with machine %s", sv.lbIP, prev)
		} else {
			s.diag(render.SeverityWarning, sv.obj, "spec.type", "no healthy machine can hold LoadBalancer address %s: nobody answers for it", sv.lbIP)
			continue
		}
		holder.held = append(holder.held, sv.lbIP)
		s.res.Memory.Holders[sv.key] = holder.name
	}
	for _, m := range s.machines {
		slices.SortFunc(m.held, netip.Addr.Compare)
	}
}

// rendezvous picks the machine ranked first for a.
func rendezvous(a netip.Addr, ms []*machine) *machine {
	var best *machine
	var top uint64
	for _, m := range ms {
		if h := hashOf(a.String() + "\x00" + m.name); best == nil || h > top {
			best, top = m, h
		}
	}
	return best
}

// whyNot says why a machine no longer holds an address.
func (s *state) whyNot(name string, sel labels.Selector) string {
	m := s.byName[name]
	switch {
	case m == nil:
		return "it left the repository"
	case m.in == nil || !m.in.Reachable:
		return "it is unreachable"
	case !m.healthy:
		return "its network is not healthy"
	case !sel.Matches(labels.Set(m.spec.Labels)):
		return "the Cluster's spec.loadBalancer.machineSelector no longer chooses it"
	}
	return "it has no ready endpoint of the Service (externalTrafficPolicy Local)"
}
