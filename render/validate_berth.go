package render

import (
	"cmp"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"

	"berth.dev/berth/render/api/v1alpha1"
)

func (c *checker) machine(m *v1alpha1.Machine) {
	s := &m.Spec
	c.machineAddress(s.Address)
	c.portNumber("spec.ssh.port", "port", s.SSH.Port)
	if s.SSH.User == "" || strings.ContainsAny(s.SSH.User, " \t\n@:") {
		c.errorf("spec.ssh.user", "invalid user %q", s.SSH.User)
	}
	if s.SSH.HostKey != "" {
		if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(s.SSH.HostKey)); err != nil {
			c.errorf("spec.ssh.hostKey", "not an SSH public key in authorized_keys format (\"ssh-ed25519 AAAA...\"): %v", err)
		} else if len(strings.TrimSpace(string(rest))) > 0 {
			c.errorf("spec.ssh.hostKey", "pin exactly one host key")
		}
	}
	if s.PodCIDR != "" {
		if p, ok := c.cidr("spec.podCIDR", s.PodCIDR); ok {
			cl := c.v.podCIDR
			if cl.IsValid() && !(cl.Bits() <= p.Bits() && cl.Contains(p.Addr())) {
				c.errorf("spec.podCIDR", "podCIDR %s is not inside the Cluster's pod CIDR %s", p, cl)
			} else {
				c.v.podCIDRs = append(c.v.podCIDRs, cidrUse{p, place{c.o, "spec.podCIDR"}})
			}
		}
	}
	seen := map[string]string{}
	for i, t := range s.Taints {
		p := fmt.Sprintf("spec.taints[%d]", i)
		if t.Key == "" {
			c.errorf(p+".key", "a taint key is required")
		} else {
			c.invalid(p+".key", "taint key", t.Key, content.IsLabelKey(t.Key))
		}
		c.invalid(p+".value", "taint value", t.Value, content.IsLabelValue(t.Value))
		if t.Effect == "" {
			c.errorf(p+".effect", "a taint effect is required: NoSchedule, PreferNoSchedule or NoExecute")
		} else if oneOf(c, p+".effect", t.Effect, corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute) {
			k := t.Key + ":" + string(t.Effect)
			if prev, dup := seen[k]; dup {
				c.errorf(p, "taint %s is declared twice (also %s)", k, prev)
			}
			seen[k] = p
		}
	}
	for _, f := range []struct{ name, v string }{
		{"stateDir", s.Agent.StateDir},
		{"socket", s.Agent.Socket},
		{"logDir", s.Agent.LogDir},
		{"binaryPath", s.Agent.BinaryPath},
	} {
		if f.v != "" && !path.IsAbs(f.v) {
			c.errorf("spec.agent."+f.name, "%s %q must be an absolute path", f.name, f.v)
		}
	}
}

// machineAddress checks an address is an IP address or a DNS name, and
// that no other Machine has it.
func (c *checker) machineAddress(addr string) {
	const p = "spec.address"
	if addr == "" {
		c.errorf(p, "an address is required: the IP address or DNS name the controller reaches the machine at over SSH")
		return
	}
	var key string
	if ip, err := netip.ParseAddr(addr); err == nil {
		key = ip.Unmap().String()
	} else {
		name := strings.ToLower(strings.TrimSuffix(addr, "."))
		if msgs := content.IsDNS1123Subdomain(name); len(msgs) > 0 {
			c.errorf(p, "address %q is neither an IP address nor a DNS name", addr)
			return
		}
		key = name
	}
	if prev, dup := c.v.addresses[key]; dup {
		c.errorf(p, "address %s is also the address of %s: two machines cannot share one", addr, prev)
		return
	}
	c.v.addresses[key] = place{c.o, p}
}

// machineCIDRs reports Machines whose pod CIDRs overlap. Prefixes either
// nest or are disjoint, so after sorting, each one overlaps an earlier one
// exactly when the widest earlier one not nested in another contains it.
func (v *validator) machineCIDRs() {
	uses := v.podCIDRs
	slices.SortFunc(uses, func(a, b cidrUse) int {
		if c := a.prefix.Addr().Compare(b.prefix.Addr()); c != 0 {
			return c
		}
		return a.prefix.Bits() - b.prefix.Bits()
	})
	var cover *cidrUse
	for i := range uses {
		u := &uses[i]
		if cover != nil && cover.prefix.Overlaps(u.prefix) {
			c := &checker{v: v, o: u.at.o}
			c.errorf(u.at.path, "podCIDR %s overlaps podCIDR %s of %s", u.prefix, cover.prefix, cover.at)
			continue
		}
		cover = u
	}
}

// cidr parses a CIDR that must be a network address.
func (c *checker) cidr(p, s string) (netip.Prefix, bool) {
	pr, err := netip.ParsePrefix(s)
	if err != nil {
		c.errorf(p, "invalid CIDR %q: want an address range such as 10.244.0.0/16", s)
		return pr, false
	}
	if pr != pr.Masked() {
		c.errorf(p, "%s has host bits set: the range is %s", s, pr.Masked())
		return pr, false
	}
	return pr, true
}

// Checklist actions a Cluster may set.
var checklistActions = []v1alpha1.Action{v1alpha1.ActionOff, v1alpha1.ActionWarn, v1alpha1.ActionDeny}

func (c *checker) cluster(cl *v1alpha1.Cluster) {
	s := &cl.Spec
	pod, podOK := c.cidr("spec.podCIDR", s.PodCIDR)
	svc, svcOK := c.cidr("spec.serviceCIDR", s.ServiceCIDR)
	if podOK && svcOK && pod.Overlaps(svc) {
		c.errorf("spec.serviceCIDR", "serviceCIDR %s overlaps podCIDR %s", svc, pod)
	}
	c.invalid("spec.clusterDomain", "clusterDomain", s.ClusterDomain, content.IsDNS1123Subdomain(s.ClusterDomain))
	if msg := branchNameProblem(s.StatusBranch); msg != "" {
		c.errorf("spec.statusBranch", "invalid branch name %q: %s", s.StatusBranch, msg)
	}
	for _, k := range sortedKeys(s.Policy.Checklist) {
		oneOf(c, "spec.policy.checklist["+k+"]", s.Policy.Checklist[k], checklistActions...)
	}
	hosts := map[string]string{}
	for i, r := range s.Registries {
		p := fmt.Sprintf("spec.registries[%d].host", i)
		switch {
		case strings.TrimSpace(r.Host) == "":
			c.errorf(p, "a registry host is required")
		case strings.Contains(r.Host, "://"):
			c.errorf(p, "host %q must be host[:port] as in image references, without a scheme", r.Host)
		case strings.ContainsAny(r.Host, "/ "):
			c.errorf(p, "host %q must be host[:port] as in image references, without a path", r.Host)
		case hosts[r.Host] != "":
			c.errorf(p, "registry %s is configured twice (also %s)", r.Host, hosts[r.Host])
		default:
			hosts[r.Host] = p
		}
	}
	c.clusterNetwork(s, pod, podOK, svc, svcOK)
	for i, k := range s.IgnoreKinds {
		p := fmt.Sprintf("spec.ignoreKinds[%d]", i)
		if k.APIVersion == "" {
			c.errorf(p+".apiVersion", "apiVersion is required")
		}
		if k.Kind == "" {
			c.errorf(p+".kind", "kind is required (or * for every kind of the apiVersion)")
		}
	}
}

// branchNameProblem says why a name is not a valid git branch name (the
// rules of git check-ref-format), or returns "".
func branchNameProblem(b string) string {
	switch {
	case b == "":
		return "it is empty"
	case strings.HasPrefix(b, "-"):
		return "it must not start with -"
	case b == "@":
		return "it must not be @"
	case strings.HasSuffix(b, "."):
		return "it must not end with ."
	case strings.Contains(b, ".."):
		return "it must not contain .."
	case strings.Contains(b, "@{"):
		return "it must not contain @{"
	}
	for _, r := range b {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(" ~^:?*[\\", r) {
			return fmt.Sprintf("it must not contain %q", r)
		}
	}
	for part := range strings.SplitSeq(b, "/") {
		switch {
		case part == "":
			return "it must not start or end with / or contain //"
		case strings.HasPrefix(part, "."):
			return "no part of it may start with ."
		case strings.HasSuffix(part, ".lock"):
			return "no part of it may end with .lock"
		}
	}
	return ""
}

// clusterNetwork checks the settings of the pod network, the cluster DNS,
// LoadBalancer addresses and ingress machines.
func (c *checker) clusterNetwork(s *v1alpha1.ClusterSpec, pod netip.Prefix, podOK bool, svc netip.Prefix, svcOK bool) {
	if m := s.PodCIDRMaskSize; m != 0 && podOK {
		// A machine's share needs its gateway and at least one pod.
		if max := int32(pod.Addr().BitLen() - 2); m < int32(pod.Bits()) || m > max {
			c.errorf("spec.podCIDRMaskSize", "podCIDRMaskSize %d must be between the pod CIDR's own %d and %d", m, pod.Bits(), max)
		}
	}
	for i, u := range s.DNS.Upstreams {
		if _, err := netip.ParseAddr(u); err == nil {
			continue
		}
		if ap, err := netip.ParseAddrPort(u); err != nil || ap.Port() == 0 {
			c.errorf(fmt.Sprintf("spec.dns.upstreams[%d]", i), "upstream %q must be an IP address, optionally with a port (198.18.0.1 or 198.18.0.1:53)", u)
		}
	}
	var pools []v1alpha1.AddressRange
	for i, p := range s.LoadBalancer.Pools {
		path := fmt.Sprintf("spec.loadBalancer.pools[%d]", i)
		r, err := v1alpha1.ParseAddressRange(p)
		if err != nil {
			c.errorf(path, "invalid pool %q: %v", p, err)
			continue
		}
		if svcOK && r.First.Is4() != svc.Addr().Is4() {
			c.errorf(path, "pool %s is not of the serviceCIDR's address family (%s): Services are single-stack", p, svc)
			continue
		}
		for _, other := range []struct {
			name string
			p    netip.Prefix
			ok   bool
		}{{"podCIDR", pod, podOK}, {"serviceCIDR", svc, svcOK}} {
			if other.ok && r.Overlaps(v1alpha1.RangeOf(other.p)) {
				c.errorf(path, "pool %s overlaps %s %s", p, other.name, other.p)
			}
		}
		for j, q := range pools {
			if r.Overlaps(q) {
				c.errorf(path, "pool %s overlaps spec.loadBalancer.pools[%d]", p, j)
			}
		}
		pools = append(pools, r)
	}
	if sel := s.LoadBalancer.MachineSelector; sel != nil {
		c.selector("spec.loadBalancer.machineSelector", sel)
	}
	in := &s.Ingress
	if in.MachineSelector != nil {
		c.selector("spec.ingress.machineSelector", in.MachineSelector)
	}
	if in.ClassName != "" {
		c.invalid("spec.ingress.className", "className", in.ClassName, content.IsDNS1123Subdomain(in.ClassName))
	}
	httpOK := in.HTTPPort == 0 || c.portNumber("spec.ingress.httpPort", "httpPort", in.HTTPPort)
	httpsOK := in.HTTPSPort == 0 || c.portNumber("spec.ingress.httpsPort", "httpsPort", in.HTTPSPort)
	if httpOK && httpsOK && cmp.Or(in.HTTPPort, 80) == cmp.Or(in.HTTPSPort, 443) {
		c.errorf("spec.ingress.httpsPort", "httpsPort %d is also the httpPort", cmp.Or(in.HTTPSPort, 443))
	}
}
