package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
)

const (
	// DefaultDomain is the cluster domain when Input.Domain is empty.
	DefaultDomain = "cluster.local"
	// DefaultTTL is the TTL of every record when Input.TTL is zero, as
	// CoreDNS's kubernetes plugin has it.
	DefaultTTL = 5
	// MaxTTL is the largest TTL a View accepts (CoreDNS caps it there too).
	MaxTTL = 3600
	// SchemaVersion is the version of the Kubernetes DNS schema served as
	// TXT at dns-version.<domain>.
	SchemaVersion = "1.1.0"

	// maxChase bounds how many in-zone CNAMEs (ExternalName services
	// pointing at each other) one answer follows.
	maxChase = 8
)

// PodMode says how names of the form a-b-c-d.<ns>.pod.<domain> are
// answered (CoreDNS's "pods" option).
type PodMode int

const (
	// PodsVerified answers only for a pod of the View with that address
	// in that namespace.
	PodsVerified PodMode = iota
	// PodsInsecure answers any well-formed address in a namespace that
	// exists, as kube-dns did.
	PodsInsecure
	// PodsDisabled answers NXDOMAIN for every pod name.
	PodsDisabled
)

// Input is the plain data a View is built from: what the agent knows of
// the cluster's Services, their ready endpoints and the pods.
type Input struct {
	// Domain is the cluster domain; DefaultDomain when empty.
	Domain string
	// TTL of every record, in seconds; DefaultTTL when zero.
	TTL uint32
	// Serial is the SOA serial; the agent passes something that grows
	// with each desired state (its generation, say). 1 when zero.
	Serial uint32
	// PodMode says how pod address names are answered.
	PodMode  PodMode
	Services []Service
	Pods     []Pod
	// Namespaces that exist even without a Service or pod in them (so
	// that <ns>.svc.<domain> is NODATA rather than NXDOMAIN).
	Namespaces []string
	// NameserverIPs are the addresses pods reach the cluster DNS at; they
	// are served as the zone's NS (ns.dns.<domain>). Optional.
	NameserverIPs []netip.Addr
	// ReverseZones are prefixes (the service and pod CIDRs) whose reverse
	// names are answered authoritatively: an address in them without a
	// record is NXDOMAIN rather than forwarded upstream.
	ReverseZones []netip.Prefix
}

// Service is one Service with its ready endpoints.
type Service struct {
	Namespace string
	Name      string
	// Type is ClusterIP when empty.
	Type corev1.ServiceType
	// ClusterIPs of the Service; none (or Headless) makes it headless.
	ClusterIPs []netip.Addr
	// Headless is clusterIP: None.
	Headless bool
	// ExternalName is the target of an ExternalName Service's CNAME.
	ExternalName string
	Ports        []ServicePort
	// Endpoints are the ready endpoints only (or all of them when the
	// Service publishes not-ready addresses).
	Endpoints []Endpoint
}

// ServicePort is one port of a Service. Only named ports get SRV records
// of the form _<name>._<proto>.
type ServicePort struct {
	Name string
	// Protocol is TCP when empty.
	Protocol corev1.Protocol
	Port     int32
	// TargetPort is the endpoints' port number when an Endpoint lists no
	// ports of its own; Port when zero.
	TargetPort int32
}

// Endpoint is one ready address behind a Service.
type Endpoint struct {
	IP netip.Addr
	// Hostname and Subdomain are the pod's spec.hostname and
	// spec.subdomain. As the endpoints controller does, the hostname names
	// the endpoint (hostname.<service>.<ns>.svc.<domain>, a StatefulSet
	// pod's stable name) only when Subdomain is the Service's name;
	// otherwise the endpoint is named by its address with dashes.
	Hostname  string
	Subdomain string
	// Ports are the endpoint's ports (names as in the Service, numbers
	// the pod's). Nil means the Service's ports at their TargetPort.
	Ports []EndpointPort
}

// EndpointPort is one port of an endpoint.
type EndpointPort struct {
	Name string
	// Protocol is TCP when empty.
	Protocol corev1.Protocol
	Port     int32
}

// Pod is a pod's addresses in its namespace, for a-b-c-d.<ns>.pod.<domain>
// names and their PTR records.
type Pod struct {
	Namespace string
	IPs       []netip.Addr
}

// View is an immutable snapshot of the cluster's DNS records. Lookups are
// one map access (plus the labels' lowercasing); a View is safe for
// concurrent use and is replaced whole, never changed.
type View struct {
	zone     string // "cluster.local."
	dotZone  string // ".cluster.local."
	ttl      uint32
	podMode  PodMode
	soa      []dns.RR
	names    map[string]*node
	reverse  []reverseZone
	problems []string
}

// node holds the records of one owner name; an empty node is an empty
// non-terminal (the name exists, NODATA for every type). Most names have
// only addresses or a PTR, so the rest hangs off pointers (a node is a
// large part of a big View's memory).
type node struct {
	a, aaaa   []dns.RR
	ptr       []dns.RR
	srv       *srvSet
	apex      *apexSet
	cname     *dns.CNAME
	namespace bool // <ns>.svc or <ns>.pod: the namespace exists
}

// srvSet is a name's SRV records with their targets' addresses.
type srvSet struct {
	rrs, extra []dns.RR
}

// apexSet holds the records only the zone apex and dns-version have.
type apexSet struct {
	soa, ns, nsExtra, txt []dns.RR
}

// reverseZone is one of Input.ReverseZones with the SOA of the enclosing
// octet (or nibble) aligned in-addr.arpa / ip6.arpa zone.
type reverseZone struct {
	prefix netip.Prefix
	soa    []dns.RR
}

// Result is a View's answer to one question. Its slices are shared with
// the View and must not be modified.
type Result struct {
	Rcode  int
	Answer []dns.RR
	Ns     []dns.RR
	Extra  []dns.RR
	// Chase is set when Answer ends with a CNAME to a name outside the
	// cluster domain (an ExternalName Service): the caller resolves it
	// upstream and appends what it gets.
	Chase string
}

var errEmptyDomain = errors.New("empty cluster domain")

// NewView builds a View. It fails only on an unusable domain or TTL;
// Services, endpoints and pods that cannot be named in DNS (names that are
// not DNS labels, invalid addresses) are left out and listed by Problems.
func NewView(in Input) (*View, error) {
	domain := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(in.Domain), "."))
	if in.Domain == "" {
		domain = DefaultDomain
	}
	if domain == "" {
		return nil, errEmptyDomain
	}
	if !isDomainName(domain + ".") {
		return nil, fmt.Errorf("cluster domain %q is not a domain name", in.Domain)
	}
	ttl := in.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl > MaxTTL {
		return nil, fmt.Errorf("ttl %d above the maximum %d", ttl, MaxTTL)
	}
	serial := in.Serial
	if serial == 0 {
		serial = 1
	}
	zone := domain + "."
	v := &View{
		zone:    zone,
		dotZone: "." + zone,
		ttl:     ttl,
		podMode: in.PodMode,
		names:   make(map[string]*node, sizeHint(in)),
	}
	v.soa = []dns.RR{v.newSOA(zone, serial)}
	b := builder{v: v, services: make(map[string]bool, len(in.Services))}
	b.apex(in.NameserverIPs)
	for _, ns := range in.Namespaces {
		b.namespace(ns)
	}
	for i := range in.Services {
		b.service(&in.Services[i])
	}
	for _, p := range in.Pods {
		b.pod(p, in.PodMode != PodsDisabled)
	}
	for _, p := range in.ReverseZones {
		if !p.IsValid() {
			b.problem("reverse zone %v: invalid prefix", p)
			continue
		}
		p = p.Masked()
		v.reverse = append(v.reverse, reverseZone{prefix: p, soa: []dns.RR{v.newSOA(reverseZoneName(p), serial)}})
	}
	b.finish()
	return v, nil
}

// sizeHint estimates a View's names: a Service's name, port names and
// address's PTR; an endpoint's name and PTR; a pod's name and PTR.
func sizeHint(in Input) int {
	n := 16
	for i := range in.Services {
		s := &in.Services[i]
		n += 1 + 2*len(s.Ports) + len(s.ClusterIPs) + 2*len(s.Endpoints)
	}
	for _, p := range in.Pods {
		n += 2 * len(p.IPs)
	}
	return n
}

// Domain is the cluster domain, without the final dot.
func (v *View) Domain() string { return strings.TrimSuffix(v.zone, ".") }

// TTL is the TTL of the View's records.
func (v *View) TTL() uint32 { return v.ttl }

// Problems lists the inputs NewView left out and why.
func (v *View) Problems() []string { return v.problems }

// Len is the number of owner names the View answers for.
func (v *View) Len() int { return len(v.names) }

func (v *View) newSOA(zone string, serial uint32) *dns.SOA {
	return &dns.SOA{
		Hdr:     v.hdr(zone, dns.TypeSOA),
		Ns:      "ns.dns." + v.zone,
		Mbox:    "hostmaster." + v.zone,
		Serial:  serial,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  v.ttl,
	}
}

func (v *View) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: v.ttl}
}

// InZone reports whether name (fully qualified, any case) is in the
// cluster domain.
func (v *View) InZone(name string) bool {
	name = strings.ToLower(name)
	return name == v.zone || strings.HasSuffix(name, v.dotZone)
}

// Lookup answers a question of class IN. It reports false when the name is
// not the View's to answer (outside the cluster domain and the reverse
// names it knows), and the caller forwards it. Names are matched without
// regard to case; qname must be fully qualified.
func (v *View) Lookup(qname string, qtype uint16) (Result, bool) {
	name := strings.ToLower(qname)
	if name == v.zone || strings.HasSuffix(name, v.dotZone) {
		return v.lookupZone(name, qname, qtype), true
	}
	if strings.HasSuffix(name, ".in-addr.arpa.") || strings.HasSuffix(name, ".ip6.arpa.") {
		return v.lookupReverse(name, qtype)
	}
	return Result{}, false
}

func (v *View) lookupZone(name, qname string, qtype uint16) Result {
	var res Result
	for depth := 0; ; depth++ {
		n := v.names[name]
		if n == nil {
			n = v.podNode(name, qname)
		}
		if n == nil {
			// A CNAME chain that ends at a missing name keeps its CNAMEs
			// and the final rcode (RFC 6604).
			res.Rcode = dns.RcodeNameError
			res.Ns = v.soa
			return res
		}
		if n.cname != nil && qtype != dns.TypeCNAME {
			res.Answer = append(res.Answer, n.cname)
			target := n.cname.Target
			if target != v.zone && !strings.HasSuffix(target, v.dotZone) {
				res.Chase = target
				return res
			}
			if depth >= maxChase {
				res.Rcode = dns.RcodeServerFailure
				return res
			}
			name, qname = target, target
			continue
		}
		rrs, extra := n.records(qtype)
		if len(rrs) == 0 {
			res.Ns = v.soa
			return res
		}
		if res.Answer == nil {
			res.Answer = rrs
		} else {
			res.Answer = append(res.Answer, rrs...)
		}
		res.Extra = extra
		return res
	}
}

func (n *node) records(qtype uint16) (answer, extra []dns.RR) {
	switch qtype {
	case dns.TypeA:
		return n.a, nil
	case dns.TypeAAAA:
		return n.aaaa, nil
	case dns.TypePTR:
		return n.ptr, nil
	case dns.TypeSRV:
		if n.srv != nil {
			return n.srv.rrs, n.srv.extra
		}
	case dns.TypeTXT:
		if n.apex != nil {
			return n.apex.txt, nil
		}
	case dns.TypeSOA:
		if n.apex != nil {
			return n.apex.soa, nil
		}
	case dns.TypeNS:
		if n.apex != nil {
			return n.apex.ns, n.apex.nsExtra
		}
	case dns.TypeCNAME:
		if n.cname != nil {
			return []dns.RR{n.cname}, nil
		}
	case dns.TypeANY:
		var all []dns.RR
		for _, t := range []uint16{dns.TypeSOA, dns.TypeNS, dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeTXT} {
			rrs, _ := n.records(t)
			all = append(all, rrs...)
		}
		return all, nil
	}
	return nil, nil
}

// podNode answers a pod name that has no precomputed node: an address
// written in another form than the canonical one (fd00-0-0-0-0-0-0-1 for
// fd00::1), or any address in PodsInsecure mode. It returns nil for
// NXDOMAIN.
func (v *View) podNode(name, qname string) *node {
	if v.podMode == PodsDisabled {
		return nil
	}
	rest := strings.TrimSuffix(name, v.dotZone)
	label, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return nil
	}
	ns, kind, ok := strings.Cut(rest, ".")
	if !ok || kind != "pod" {
		return nil
	}
	ip, ok := parseDashed(label)
	if !ok {
		return nil
	}
	canonical := v.names[dashed(ip)+"."+ns+".pod."+v.zone]
	if canonical == nil && v.podMode == PodsInsecure {
		if nsNode := v.names[ns+".pod."+v.zone]; nsNode != nil && nsNode.namespace {
			canonical = &node{}
			if ip.Is4() {
				canonical.a = []dns.RR{&dns.A{Hdr: v.hdr(qname, dns.TypeA), A: ip.AsSlice()}}
			} else {
				canonical.aaaa = []dns.RR{&dns.AAAA{Hdr: v.hdr(qname, dns.TypeAAAA), AAAA: ip.AsSlice()}}
			}
			return canonical
		}
	}
	if canonical == nil {
		return nil
	}
	// Same records under the name that was asked.
	n := &node{}
	for _, rr := range canonical.a {
		c := dns.Copy(rr)
		c.Header().Name = qname
		n.a = append(n.a, c)
	}
	for _, rr := range canonical.aaaa {
		c := dns.Copy(rr)
		c.Header().Name = qname
		n.aaaa = append(n.aaaa, c)
	}
	return n
}

func (v *View) lookupReverse(name string, qtype uint16) (Result, bool) {
	n := v.names[name]
	if n != nil {
		if rrs, _ := n.records(qtype); len(rrs) > 0 {
			return Result{Answer: rrs}, true
		}
	}
	ip, parsed := parseReverse(name)
	var soa []dns.RR
	for _, z := range v.reverse {
		if parsed && z.prefix.Contains(ip) {
			soa = z.soa
			break
		}
	}
	switch {
	case n != nil && soa == nil:
		// NODATA for a name we own outside the reverse zones we serve.
		soa = []dns.RR{v.newSOA(reverseZoneName(netip.PrefixFrom(ip, 0)), v.soa[0].(*dns.SOA).Serial)}
		return Result{Ns: soa}, true
	case n != nil:
		return Result{Ns: soa}, true
	case soa != nil:
		return Result{Rcode: dns.RcodeNameError, Ns: soa}, true
	}
	return Result{}, false
}

// builder fills a View's names. Records, nodes and one-record sets are
// carved from chunks rather than allocated one by one: a big View has
// hundreds of thousands of them, all living exactly as long as the View,
// and building it is mostly allocation otherwise.
type builder struct {
	v        *View
	services map[string]bool // the Services' names, to find duplicates

	nodes slab[node]
	as    slab[dns.A]
	aaaas slab[dns.AAAA]
	ptrs  slab[dns.PTR]
	srvs  slab[dns.SRV]
	sets  []dns.RR      // backing of one-record sets
	ipv4  slab[[4]byte] // backing of A records' addresses
	ipv6  slab[[16]byte]
}

// slab hands out pointers into chunks of 512 values.
type slab[T any] struct{ chunk []T }

func (s *slab[T]) new() *T {
	if len(s.chunk) == cap(s.chunk) {
		s.chunk = make([]T, 0, 512)
	}
	s.chunk = s.chunk[:len(s.chunk)+1]
	return &s.chunk[len(s.chunk)-1]
}

// add appends rr to a record set; a set's first record takes a slot of
// the slab (with no room to grow, so a second append copies).
func (b *builder) add(set []dns.RR, rr dns.RR) []dns.RR {
	if set != nil {
		return append(set, rr)
	}
	if len(b.sets) == cap(b.sets) {
		b.sets = make([]dns.RR, 0, 512)
	}
	i := len(b.sets)
	b.sets = append(b.sets, rr)
	return b.sets[i : i+1 : i+1]
}

func (b *builder) problem(format string, args ...any) {
	b.v.problems = append(b.v.problems, fmt.Sprintf(format, args...))
}

// node returns the node of a name in the zone, creating it and the empty
// non-terminals between it and the zone apex.
func (b *builder) node(name string) *node {
	n := b.v.names[name]
	if n != nil {
		return n
	}
	n = b.nodes.new()
	b.v.names[name] = n
	for parent := name; parent != b.v.zone; {
		_, parent, _ = strings.Cut(parent, ".")
		if parent == "" || b.v.names[parent] != nil {
			break
		}
		b.v.names[parent] = b.nodes.new()
	}
	return n
}

// reverseNode returns the node of a reverse name; its parents are not the
// View's (the in-addr.arpa tree belongs to upstream).
func (b *builder) reverseNode(name string) *node {
	n := b.v.names[name]
	if n == nil {
		n = b.nodes.new()
		b.v.names[name] = n
	}
	return n
}

func (b *builder) apex(nameservers []netip.Addr) {
	v := b.v
	apex := b.node(v.zone)
	apex.apex = &apexSet{soa: v.soa}
	b.node("svc." + v.zone)
	b.node("pod." + v.zone)
	b.node("dns-version." + v.zone).apex = &apexSet{
		txt: []dns.RR{&dns.TXT{Hdr: v.hdr("dns-version."+v.zone, dns.TypeTXT), Txt: []string{SchemaVersion}}},
	}
	if len(nameservers) == 0 {
		return
	}
	nsName := "ns.dns." + v.zone
	apex.apex.ns = []dns.RR{&dns.NS{Hdr: v.hdr(v.zone, dns.TypeNS), Ns: nsName}}
	nsNode := b.node(nsName)
	for _, ip := range nameservers {
		b.addAddr(nsNode, nsName, ip)
	}
	apex.apex.nsExtra = append(append([]dns.RR(nil), nsNode.a...), nsNode.aaaa...)
}

// namespace makes <ns>.svc and <ns>.pod exist and reports whether ns is a
// usable label.
func (b *builder) namespace(ns string) bool {
	ns = strings.ToLower(ns)
	if !isLabel(ns) {
		b.problem("namespace %q: not a DNS label", ns)
		return false
	}
	b.node(ns + ".svc." + b.v.zone).namespace = true
	b.node(ns + ".pod." + b.v.zone).namespace = true
	return true
}

// addAddr adds an A or AAAA record for ip to n, named name, and returns it.
func (b *builder) addAddr(n *node, name string, ip netip.Addr) dns.RR {
	ip = ip.Unmap()
	if ip.Is4() {
		a := b.ipv4.new()
		*a = ip.As4()
		rr := b.as.new()
		*rr = dns.A{Hdr: b.v.hdr(name, dns.TypeA), A: a[:]}
		n.a = b.add(n.a, rr)
		return rr
	}
	a := b.ipv6.new()
	*a = ip.As16()
	rr := b.aaaas.new()
	*rr = dns.AAAA{Hdr: b.v.hdr(name, dns.TypeAAAA), AAAA: a[:]}
	n.aaaa = b.add(n.aaaa, rr)
	return rr
}

func (b *builder) addPTR(ip netip.Addr, target string) {
	name := reverseName(ip.Unmap())
	n := b.reverseNode(name)
	for _, rr := range n.ptr {
		if rr.(*dns.PTR).Ptr == target {
			return
		}
	}
	rr := b.ptrs.new()
	*rr = dns.PTR{Hdr: b.v.hdr(name, dns.TypePTR), Ptr: target}
	n.ptr = b.add(n.ptr, rr)
}

func (b *builder) addSRV(n *node, name string, port int32, target string, extra []dns.RR) {
	if n.srv == nil {
		n.srv = &srvSet{}
	}
	rr := b.srvs.new()
	*rr = dns.SRV{Hdr: b.v.hdr(name, dns.TypeSRV), Port: uint16(port), Target: target}
	n.srv.rrs = b.add(n.srv.rrs, rr)
	n.srv.extra = append(n.srv.extra, extra...)
}

func (b *builder) service(s *Service) {
	ns, name := strings.ToLower(s.Namespace), strings.ToLower(s.Name)
	if !b.namespace(ns) {
		return
	}
	if !isLabel(name) {
		b.problem("service %s/%s: name is not a DNS label", s.Namespace, s.Name)
		return
	}
	base := name + "." + ns + ".svc." + b.v.zone
	if b.services[base] {
		b.problem("service %s/%s: listed twice, the first kept", s.Namespace, s.Name)
		return
	}
	b.services[base] = true
	if s.Type == corev1.ServiceTypeExternalName {
		target := strings.ToLower(dns.Fqdn(strings.TrimSpace(s.ExternalName)))
		if _, err := netip.ParseAddr(strings.TrimSuffix(target, ".")); err == nil || !isDomainName(target) {
			b.problem("service %s/%s: externalName %q is not a domain name", s.Namespace, s.Name, s.ExternalName)
			return
		}
		b.node(base).cname = &dns.CNAME{Hdr: b.v.hdr(base, dns.TypeCNAME), Target: target}
		return
	}
	headless := s.Headless || len(s.ClusterIPs) == 0
	if headless && len(s.Endpoints) == 0 {
		// The spec: NXDOMAIN for a headless Service without ready
		// endpoints (the name does not exist).
		return
	}
	svc := b.node(base)
	if !headless {
		for _, ip := range s.ClusterIPs {
			if !ip.IsValid() {
				b.problem("service %s/%s: invalid cluster IP", s.Namespace, s.Name)
				continue
			}
			b.addAddr(svc, base, ip)
			b.addPTR(ip, base)
		}
		svcAddrs := append(append([]dns.RR(nil), svc.a...), svc.aaaa...)
		for _, p := range s.Ports {
			b.port(svc, base, p.Name, p.Protocol, p.Port, base, svcAddrs)
		}
	}
	// An address may be listed more than once (in two EndpointSlices
	// with different ports): its records are made once.
	addrs := make(map[netip.Addr]dns.RR, len(s.Endpoints))
	for _, ep := range s.Endpoints {
		if !ep.IP.IsValid() {
			b.problem("service %s/%s: endpoint with an invalid address", s.Namespace, s.Name)
			continue
		}
		epName := endpointHostname(ep, name) + "." + base
		addr, seen := addrs[ep.IP]
		if !seen {
			addr = b.addAddr(b.node(epName), epName, ep.IP)
			addrs[ep.IP] = addr
			b.addPTR(ep.IP, epName)
			if headless {
				b.addAddr(svc, base, ep.IP)
			}
		}
		if !headless {
			continue
		}
		epName = addr.Header().Name
		extra := []dns.RR{addr}
		if ep.Ports == nil {
			for _, p := range s.Ports {
				target := p.TargetPort
				if target == 0 {
					target = p.Port
				}
				b.port(svc, base, p.Name, p.Protocol, target, epName, extra)
			}
			continue
		}
		for _, p := range ep.Ports {
			b.port(svc, base, p.Name, p.Protocol, p.Port, epName, extra)
		}
	}
}

// port adds the SRV records of one port: under the Service's own name for
// every port (CoreDNS answers SRV there with all of them) and under
// _<name>._<proto> for a named one.
func (b *builder) port(svc *node, base, portName string, proto corev1.Protocol, number int32, target string, extra []dns.RR) {
	if number <= 0 || number > 65535 {
		b.problem("%s: port %d out of range", strings.TrimSuffix(base, "."), number)
		return
	}
	b.addSRV(svc, base, number, target, extra)
	if portName == "" {
		return
	}
	portName = strings.ToLower(portName)
	if !isLabel(portName) {
		b.problem("%s: port name %q is not a DNS label", strings.TrimSuffix(base, "."), portName)
		return
	}
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	name := "_" + portName + "._" + strings.ToLower(string(proto)) + "." + base
	b.addSRV(b.node(name), name, number, target, extra)
}

// pod makes the pod's namespace exist and, with records, its address
// names and their PTRs.
func (b *builder) pod(p Pod, records bool) {
	ns := strings.ToLower(p.Namespace)
	if !b.namespace(ns) || !records {
		return
	}
	for _, ip := range p.IPs {
		if !ip.IsValid() {
			b.problem("pod in %s: invalid address", p.Namespace)
			continue
		}
		ip = ip.Unmap()
		name := dashed(ip) + "." + ns + ".pod." + b.v.zone
		n := b.node(name)
		if len(n.a)+len(n.aaaa) > 0 {
			continue // the same address listed twice
		}
		b.addAddr(n, name, ip)
		// A pod behind a Service is already named by its endpoint.
		if rev := b.v.names[reverseName(ip)]; rev == nil || len(rev.ptr) == 0 {
			b.addPTR(ip, name)
		}
	}
}

// finish sets SRV weights (equal shares of 100 among a name's records, as
// RFC 2782 reads them) and drops duplicate records and extras.
func (b *builder) finish() {
	type srvKey struct {
		target string
		port   uint16
	}
	seenSRV := map[srvKey]bool{}
	seenRR := map[dns.RR]bool{}
	for _, n := range b.v.names {
		if n.srv == nil {
			continue
		}
		clear(seenSRV)
		n.srv.rrs = slices.DeleteFunc(n.srv.rrs, func(rr dns.RR) bool {
			k := srvKey{rr.(*dns.SRV).Target, rr.(*dns.SRV).Port}
			dup := seenSRV[k]
			seenSRV[k] = true
			return dup
		})
		// Extras are shared records: the same pointer for the same one.
		clear(seenRR)
		n.srv.extra = slices.DeleteFunc(n.srv.extra, func(rr dns.RR) bool {
			dup := seenRR[rr]
			seenRR[rr] = true
			return dup
		})
		w := uint16(max(100/len(n.srv.rrs), 1))
		for _, rr := range n.srv.rrs {
			rr.(*dns.SRV).Weight = w
		}
	}
}

// endpointHostname is the endpoint's label under its Service: the pod's
// hostname when its subdomain is the Service (a StatefulSet's pods behind
// their governing Service), otherwise the address with dashes.
func endpointHostname(ep Endpoint, service string) string {
	h := strings.ToLower(ep.Hostname)
	if h != "" && strings.EqualFold(ep.Subdomain, service) && isLabel(h) {
		return h
	}
	return dashed(ep.IP.Unmap())
}

// dashed writes an address as one DNS label: 10-0-0-1, fd00--1.
func dashed(ip netip.Addr) string {
	var buf [64]byte
	b := ip.AppendTo(buf[:0])
	for i, c := range b {
		if c == '.' || c == ':' {
			b[i] = '-'
		}
	}
	return string(b)
}

// parseDashed reads a label written by dashed (or another spelling of the
// same IPv6 address).
func parseDashed(label string) (netip.Addr, bool) {
	var s string
	if strings.Count(label, "-") == 3 && !strings.Contains(label, "--") {
		s = strings.ReplaceAll(label, "-", ".")
	} else {
		s = strings.ReplaceAll(label, "-", ":")
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip, true
}

// reverseName is the in-addr.arpa or ip6.arpa name of an address.
func reverseName(ip netip.Addr) string {
	var b strings.Builder
	b.Grow(73) // the longest, an ip6.arpa name
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(a[i])))
			b.WriteByte('.')
		}
		b.WriteString("in-addr.arpa.")
		return b.String()
	}
	const hex = "0123456789abcdef"
	a := ip.As16()
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[a[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString("ip6.arpa.")
	return b.String()
}

// parseReverse reads a full reverse name (lowercase) back into an address:
// four decimal octets under in-addr.arpa, 32 hex nibbles under ip6.arpa,
// least significant first.
func parseReverse(name string) (netip.Addr, bool) {
	count, base, width := 4, 10, 8
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa.")
	if !ok {
		count, base, width = 32, 16, 4
		if rest, ok = strings.CutSuffix(name, ".ip6.arpa."); !ok {
			return netip.Addr{}, false
		}
	}
	labels := strings.Split(rest, ".")
	if len(labels) != count {
		return netip.Addr{}, false
	}
	var a [16]byte
	for i, l := range labels {
		n, err := strconv.ParseUint(l, base, width)
		// No leading zeros in an octet; one digit per nibble.
		if err != nil || len(l) > 1 && (l[0] == '0' || width == 4) {
			return netip.Addr{}, false
		}
		bit := (count - 1 - i) * width
		a[bit/8] |= byte(n) << (8 - width - bit%8)
	}
	if count == 4 {
		return netip.AddrFrom4([4]byte(a[:4])), true
	}
	return netip.AddrFrom16(a), true
}

// reverseZoneName is the reverse zone that encloses a prefix, cut to whole
// octets (IPv4) or nibbles (IPv6): 10.96.0.0/12 is in 10.in-addr.arpa.
func reverseZoneName(p netip.Prefix) string {
	full := reverseName(p.Addr())
	labels := strings.Split(strings.TrimSuffix(full, "."), ".")
	// labels are the address parts, least significant first, then the
	// two suffix labels.
	parts := len(labels) - 2
	unit := 8
	if !p.Addr().Is4() {
		unit = 4
	}
	keep := p.Bits() / unit
	return strings.Join(labels[parts-keep:], ".") + "."
}

// isLabel reports whether s (lowercase) is a DNS label as Kubernetes
// names are: letters, digits and hyphens, 1 to 63 long.
func isLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isDomainName reports whether s (fully qualified, lowercase) is a host
// name made of labels.
func isDomainName(s string) bool {
	if s == "." || len(s) > 254 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
