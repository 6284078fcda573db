package network

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
	"berth.dev/berth/render/api/v1alpha1"
)

// state is the working state of one Compute call.
type state struct {
	in      Input
	d       *render.Desired
	cluster *v1alpha1.Cluster
	// clusterObj is the Cluster document, nil when the repository has none.
	clusterObj *render.Object
	res        *Result

	podCIDR, serviceCIDR netip.Prefix

	machines []*machine // of the repository, by name
	byName   map[string]*machine

	pods []*podInfo // with an address, by namespace, name and machine
	byNS map[string]*nsPods
	// nsLabels are the labels of every known namespace, the implied
	// kubernetes.io/metadata.name included.
	nsLabels map[string]map[string]string

	services []*service // by namespace and name
	svcByKey map[string]*service
}

type machine struct {
	name    string
	spec    *v1alpha1.Machine
	obj     *render.Object
	in      *Machine // nil: the caller knows nothing of it
	addrs   []netip.Addr
	podCIDR netip.Prefix
	healthy bool
	held    []netip.Addr
	ingress bool
}

// podInfo is one reported pod that has an address.
type podInfo struct {
	ns, name string
	key      string // namespace/name
	machine  string
	ip       netip.Addr
	labels   map[string]string
	// ready: it takes traffic (Ready, and neither terminating nor about to
	// stop).
	ready       bool
	terminating bool
	spec        *api.Pod
}

func (p *podInfo) hostNetwork() bool { return p.spec != nil && p.spec.Spec.HostNetwork }

// nsPods indexes one namespace's pods by label.
type nsPods struct {
	all     []*podInfo
	byLabel map[label][]*podInfo
}

type label struct{ key, value string }

// Compute works out every machine's Network. It is pure: the result
// depends only on in, which it does not modify.
func Compute(in Input) (*Result, error) {
	if in.Desired == nil {
		return nil, ErrNoDesired
	}
	s := &state{
		in: in, d: in.Desired, cluster: in.Desired.Cluster,
		res: &Result{
			Networks: map[string]*api.Network{},
			Memory: Memory{
				PodCIDRs:        map[string]netip.Prefix{},
				ClusterIPs:      map[string]netip.Addr{},
				NodePorts:       map[string]int32{},
				LoadBalancerIPs: map[string]netip.Addr{},
				Holders:         map[string]string{},
			},
		},
		byName:   map[string]*machine{},
		byNS:     map[string]*nsPods{},
		svcByKey: map[string]*service{},
	}
	if s.cluster == nil {
		s.cluster = &v1alpha1.Cluster{}
	}
	for _, o := range s.d.Objects {
		if o.Obj == any(in.Desired.Cluster) {
			s.clusterObj = o
		}
	}
	s.podCIDR = s.clusterPrefix("spec.podCIDR", s.cluster.Spec.PodCIDR)
	s.serviceCIDR = s.clusterPrefix("spec.serviceCIDR", s.cluster.Spec.ServiceCIDR)

	s.fleet()
	s.allocatePodCIDRs()
	s.indexPods()
	s.namespaces()
	s.collectServices()
	s.allocateClusterIPs()
	s.allocateNodePorts()
	s.allocateLoadBalancerIPs()
	s.endpoints()
	s.holders()
	policies := s.policies()
	ingress := s.ingress()
	s.assemble(policies, ingress)
	s.res.Diagnostics.Sort()
	return s.res, nil
}

// clusterPrefix parses one of the Cluster's ranges; validation has
// reported a bad one already, so this only says what it costs.
func (s *state) clusterPrefix(field, v string) netip.Prefix {
	p, err := netip.ParsePrefix(v)
	if err != nil || p != p.Masked() {
		s.clusterDiag(render.SeverityError, field, "%q is not a valid CIDR: nothing is allocated from it", v)
		return netip.Prefix{}
	}
	return p
}

func (s *state) diag(sev render.Severity, o *render.Object, field, format string, args ...any) {
	d := render.Diagnostic{Severity: sev, Field: field, Message: fmt.Sprintf(format, args...)}
	if o != nil {
		d.Pos, d.Object = o.FieldPos(field), o.Ref()
	}
	s.res.Diagnostics = append(s.res.Diagnostics, d)
}

func (s *state) clusterDiag(sev render.Severity, field, format string, args ...any) {
	if s.clusterObj == nil {
		s.diag(sev, nil, "", "Cluster "+field+": "+format, args...)
		return
	}
	s.diag(sev, s.clusterObj, field, format, args...)
}

// fleet joins the repository's machines with what the caller knows.
func (s *state) fleet() {
	for _, o := range s.d.Objects {
		m, ok := o.Obj.(*v1alpha1.Machine)
		if !ok {
			continue
		}
		s.byName[m.Name] = &machine{name: m.Name, spec: m, obj: o}
	}
	for i := range s.in.Machines {
		in := &s.in.Machines[i]
		if m := s.byName[in.Name]; m != nil && m.in == nil {
			m.in = in
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.byName)) {
		m := s.byName[name]
		s.machines = append(s.machines, m)
		if a, err := netip.ParseAddr(m.spec.Spec.Address); err == nil {
			m.addrs = []netip.Addr{a.Unmap()}
		} else {
			for _, a := range s.in.Addresses[m.name] {
				if a.IsValid() && !slices.Contains(m.addrs, a.Unmap()) {
					m.addrs = append(m.addrs, a.Unmap())
				}
			}
		}
		m.healthy = m.in != nil && m.in.Reachable && m.in.Healthy
	}
}

// allocatePodCIDRs gives every machine its pod CIDR: its own spec.podCIDR,
// else the one Memory remembers while it is free, else a new one.
func (s *state) allocatePodCIDRs() {
	pool := newCIDRPool(s.podCIDR, int(cmp.Or(s.cluster.Spec.PodCIDRMaskSize, v1alpha1.DefaultPodCIDRMaskSize)))
	var rest []*machine
	for _, m := range s.machines {
		if m.spec.Spec.PodCIDR == "" {
			rest = append(rest, m)
			continue
		}
		p, err := netip.ParsePrefix(m.spec.Spec.PodCIDR)
		switch {
		case err != nil || p != p.Masked():
			s.diag(render.SeverityError, m.obj, "spec.podCIDR", "podCIDR %q is not a CIDR: the machine's pods get no address", m.spec.Spec.PodCIDR)
		case !pool.free(p):
			s.diag(render.SeverityError, m.obj, "spec.podCIDR", "podCIDR %s overlaps another machine's: the machine's pods get no address", p)
		default:
			pool.claim(p)
			m.podCIDR = p
		}
	}
	var fresh []*machine
	for _, m := range rest {
		if p, ok := s.in.Memory.PodCIDRs[m.name]; ok && pool.fits(p) && pool.free(p) {
			pool.claim(p)
			m.podCIDR = p
			continue
		}
		fresh = append(fresh, m)
	}
	for _, m := range fresh {
		p, ok := pool.alloc(m.name)
		if !ok {
			s.clusterDiag(render.SeverityError, "spec.podCIDR", "no /%d left in pod CIDR %s for machine %s: its pods get no address (raise spec.podCIDRMaskSize or widen spec.podCIDR)", pool.bits, s.podCIDR, m.name)
			continue
		}
		if old, had := s.in.Memory.PodCIDRs[m.name]; had && old != p {
			s.diag(render.SeverityWarning, m.obj, "spec.podCIDR", "pod CIDR moves from %s to %s: the machine's pods must be restarted to get addresses in it", old, p)
		}
		m.podCIDR = p
	}
	for _, m := range s.machines {
		if m.podCIDR.IsValid() {
			s.res.Memory.PodCIDRs[m.name] = m.podCIDR
		}
	}
}

// indexPods collects the pods that have an address on the repository's
// machines, and indexes them by namespace and label.
func (s *state) indexPods() {
	remaining := 0
	for _, m := range s.machines {
		if m.in != nil {
			remaining += len(m.in.Pods)
		}
	}
	s.pods = make([]*podInfo, 0, remaining)
	var block []podInfo // podInfos are allocated together
	for _, m := range s.machines {
		if m.in == nil {
			continue
		}
		for i := range m.in.Pods {
			remaining--
			p := &m.in.Pods[i]
			st := &p.Status
			if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
				continue
			}
			ip, err := netip.ParseAddr(st.PodIP)
			if err != nil || s.podCIDR.IsValid() && ip.Unmap().Is4() != s.podCIDR.Addr().Is4() {
				continue // no address of the pod network's family
			}
			spec := p.Spec
			if spec != nil && (spec.Namespace != st.Namespace || spec.Name != st.Name) {
				spec = nil
			}
			terminating := st.Terminating || p.Stopping
			if len(block) == cap(block) {
				block = make([]podInfo, 0, max(64, remaining))
			}
			block = append(block, podInfo{
				ns: st.Namespace, name: st.Name, key: st.Namespace + "/" + st.Name, machine: m.name, ip: ip.Unmap(),
				labels: st.Labels, ready: st.Ready && !terminating, terminating: terminating,
				spec: spec,
			})
			s.pods = append(s.pods, &block[len(block)-1])
		}
	}
	slices.SortFunc(s.pods, func(a, b *podInfo) int {
		if c := strings.Compare(a.ns, b.ns); c != 0 {
			return c
		}
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		return strings.Compare(a.machine, b.machine)
	})
	for _, p := range s.pods {
		n := s.byNS[p.ns]
		if n == nil {
			n = &nsPods{byLabel: map[label][]*podInfo{}}
			s.byNS[p.ns] = n
		}
		n.all = append(n.all, p)
		for k, v := range p.labels {
			n.byLabel[label{k, v}] = append(n.byLabel[label{k, v}], p)
		}
	}
}

// selectPods returns the pods of ns whose labels hold every pair of sel
// (a Service selector; it must not be empty). The caller must not modify
// the slice.
func (s *state) selectPods(ns string, sel map[string]string) []*podInfo {
	n := s.byNS[ns]
	if n == nil || len(sel) == 0 {
		return nil
	}
	var base []*podInfo
	first := true
	for k, v := range sel {
		l := n.byLabel[label{k, v}]
		if first || len(l) < len(base) {
			base, first = l, false
		}
	}
	if len(sel) == 1 {
		return slices.Clip(base) // read-only
	}
	var out []*podInfo
	for _, p := range base {
		if matchesAll(p.labels, sel) {
			out = append(out, p)
		}
	}
	return out
}

// matchSelector returns the pods of ns a label selector matches, through
// the label index when the selector is plain matchLabels.
func (s *state) matchSelector(ns string, ls *metav1.LabelSelector, sel labels.Selector) []*podInfo {
	n := s.byNS[ns]
	if n == nil {
		return nil
	}
	if ls != nil && len(ls.MatchExpressions) == 0 && len(ls.MatchLabels) > 0 {
		return s.selectPods(ns, ls.MatchLabels)
	}
	var out []*podInfo
	for _, p := range n.all {
		if sel.Matches(labels.Set(p.labels)) {
			out = append(out, p)
		}
	}
	return out
}

func matchesAll(labels, sel map[string]string) bool {
	for k, v := range sel {
		if l, ok := labels[k]; !ok || l != v {
			return false
		}
	}
	return true
}

// namespaces gathers the labels of every namespace a selector may name.
func (s *state) namespaces() {
	s.nsLabels = map[string]map[string]string{}
	add := func(name string, labels map[string]string) {
		l := map[string]string{corev1.LabelMetadataName: name}
		for k, v := range labels {
			if k != corev1.LabelMetadataName {
				l[k] = v
			}
		}
		s.nsLabels[name] = l
	}
	for _, name := range []string{"default", "kube-system"} {
		add(name, nil)
	}
	for ns := range s.byNS {
		add(ns, nil)
	}
	for _, o := range s.d.Objects {
		if ns, ok := o.Obj.(*corev1.Namespace); ok {
			add(o.Name, ns.Labels)
		}
	}
}

// assemble builds every machine's Network.
func (s *state) assemble(policies map[string][]api.NetworkPolicy, ingress *api.Ingress) {
	var services []api.Service
	for _, sv := range s.services {
		services = append(services, sv.out)
	}
	pods := make([]api.PodAddress, 0, len(s.pods))
	addrs := make([]netip.Addr, len(s.pods)) // backs each pod's first address
	for i, p := range s.pods {
		if n := len(pods); n > 0 && pods[n-1].Namespace == p.ns && pods[n-1].Name == p.name {
			if !slices.Contains(pods[n-1].IPs, p.ip) {
				pods[n-1].IPs = append(pods[n-1].IPs, p.ip)
			}
			continue
		}
		addrs[i] = p.ip
		pods = append(pods, api.PodAddress{Namespace: p.ns, Name: p.name, IPs: addrs[i : i+1 : i+1]})
	}
	var routes []api.PodRoute
	for _, m := range s.machines {
		if !m.podCIDR.IsValid() {
			continue
		}
		via := netip.Addr{}
		for _, a := range m.addrs {
			if a.Is4() == m.podCIDR.Addr().Is4() {
				via = a
				break
			}
		}
		if !via.IsValid() {
			s.diag(render.SeverityError, m.obj, "spec.address", "no %s address for machine %s: other machines get no route to its pods (%s)", family(m.podCIDR.Addr()), m.name, m.podCIDR)
			continue
		}
		routes = append(routes, api.PodRoute{CIDR: m.podCIDR, Via: via, Machine: m.name})
	}
	dns := api.ClusterDNS{Domain: s.cluster.Spec.ClusterDomain, Upstreams: slices.Clone(s.cluster.Spec.DNS.Upstreams)}
	var clusterCIDRs, serviceCIDRs []netip.Prefix
	if s.podCIDR.IsValid() {
		clusterCIDRs = []netip.Prefix{s.podCIDR}
	}
	for _, m := range s.machines {
		if m.podCIDR.IsValid() && !slices.ContainsFunc(clusterCIDRs, func(c netip.Prefix) bool { return c.Contains(m.podCIDR.Addr()) && c.Bits() <= m.podCIDR.Bits() }) {
			clusterCIDRs = append(clusterCIDRs, m.podCIDR)
		}
	}
	if s.serviceCIDR.IsValid() {
		serviceCIDRs = []netip.Prefix{s.serviceCIDR}
	}
	for _, m := range s.machines {
		n := &api.Network{
			Machine:      m.name,
			PodCIDR:      m.podCIDR,
			ClusterCIDRs: clusterCIDRs,
			ServiceCIDRs: serviceCIDRs,
			NodeIPs:      s.nodeIPs(m),
			DNS:          dns,
			Services:     services,
			Pods:         pods,
			Policies:     policies[m.name],
			HeldIPs:      m.held,
		}
		for _, r := range routes {
			if r.Machine != m.name {
				n.Routes = append(n.Routes, r)
			}
		}
		if m.ingress {
			n.Ingress = ingress
		}
		s.res.Networks[m.name] = n
	}
}

// nodeIPs are the machine's addresses of the Services' family (they are
// single-stack): where its NodePorts answer.
func (s *state) nodeIPs(m *machine) []netip.Addr {
	fam := cmp.Or(s.serviceCIDR, s.podCIDR)
	if !fam.IsValid() {
		return m.addrs
	}
	var out []netip.Addr
	for _, a := range m.addrs {
		if a.Is4() == fam.Addr().Is4() {
			out = append(out, a)
		}
	}
	return out
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
