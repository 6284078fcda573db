package dns

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The limits the kubelet applies to a pod's resolv.conf (the API
// validation's MaxDNSNameservers, MaxDNSSearchPaths and
// MaxDNSSearchListChars; a search domain longer than a DNS-1123
// subdomain makes some glibc versions abort).
const (
	maxNameservers     = 3
	maxSearchPaths     = 32
	maxSearchListChars = 2048
	maxSearchDomainLen = 253
)

// defaultClusterOptions are the options of a ClusterFirst pod, as the
// kubelet gives them: names with fewer than five dots try the search list
// first, so that "svc" and "svc.ns" resolve in the cluster.
var defaultClusterOptions = []string{"ndots:5"}

// ResolvConf is the content of a resolv.conf file.
type ResolvConf struct {
	Nameservers []string
	Searches    []string
	Options     []string
}

// ParseResolvConf reads a resolv.conf as the kubelet reads the host's:
// every nameserver, the last search (or domain) line without "." and
// trailing dots, options merged by name (a later one wins). At most
// 64 KiB are read.
func ParseResolvConf(r io.Reader) (ResolvConf, error) {
	var c ResolvConf
	sc := bufio.NewScanner(io.LimitReader(r, 64<<10))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) > 1 {
				c.Nameservers = append(c.Nameservers, f[1])
			}
		case "search", "domain":
			c.Searches = []string{}
			for _, s := range f[1:] {
				if s != "." {
					c.Searches = append(c.Searches, strings.TrimSuffix(s, "."))
				}
			}
		case "options":
			c.Options = mergeOptions(c.Options, f[1:])
		}
	}
	if err := sc.Err(); err != nil {
		return ResolvConf{}, fmt.Errorf("read resolv.conf: %w", err)
	}
	return c, nil
}

// Bytes is the file's content: search, nameserver and options lines, as
// containerd writes a pod's resolv.conf.
func (c ResolvConf) Bytes() []byte {
	var b bytes.Buffer
	if len(c.Searches) > 0 {
		b.WriteString("search " + strings.Join(c.Searches, " ") + "\n")
	}
	for _, ns := range c.Nameservers {
		b.WriteString("nameserver " + ns + "\n")
	}
	if len(c.Options) > 0 {
		b.WriteString("options " + strings.Join(c.Options, " ") + "\n")
	}
	return b.Bytes()
}

// PodDNS is what decides a pod's resolv.conf.
type PodDNS struct {
	// Namespace of the pod; "default" when empty.
	Namespace string
	// ClusterDomain; DefaultDomain when empty.
	ClusterDomain string
	// Nameservers are the cluster DNS addresses (the agent's DNS server
	// as pods reach it). Without any, ClusterFirst falls back to Default,
	// as the kubelet does.
	Nameservers []netip.Addr
	// Policy is the pod's spec.dnsPolicy; ClusterFirst when empty.
	Policy      corev1.DNSPolicy
	HostNetwork bool
	// Config is the pod's spec.dnsConfig.
	Config *corev1.PodDNSConfig
	// Host is the machine's resolv.conf (the kubelet's --resolv-conf);
	// nil stands for none, which the kubelet turns into a local
	// nameserver and the root search domain.
	Host *ResolvConf
}

// PodResolvConf builds a pod's resolv.conf the way the kubelet does:
//
//   - None: only what dnsConfig says.
//   - ClusterFirst (and ClusterFirstWithHostNet; ClusterFirst with
//     hostNetwork is Default): the cluster nameservers, search
//     "<ns>.svc.<domain> svc.<domain> <domain>" then the host's search
//     domains, options ndots:5.
//   - Default: the host's resolv.conf.
//
// dnsConfig is then appended (nameservers and searches without
// duplicates, options by name, the pod's winning), and the result cut to
// the resolver's limits: three nameservers, 32 search domains of at most
// 253 characters, 2048 characters of search line. Warnings say what was
// cut or fallen back from, for the pod's events.
func PodResolvConf(p PodDNS) (ResolvConf, []string) {
	var warnings []string
	var host ResolvConf
	if p.Host != nil {
		host = ResolvConf{
			Nameservers: slices.Clone(p.Host.Nameservers),
			Searches:    slices.Clone(p.Host.Searches),
			Options:     slices.Clone(p.Host.Options),
		}
	}
	ns := p.Namespace
	if ns == "" {
		ns = "default"
	}
	domain := strings.TrimSuffix(p.ClusterDomain, ".")
	if domain == "" {
		domain = DefaultDomain
	}

	var c ResolvConf
	switch podDNSType(p.Policy, p.HostNetwork) {
	case corev1.DNSNone:
		c = ResolvConf{}
	case corev1.DNSClusterFirst:
		if len(p.Nameservers) > 0 {
			for _, ip := range p.Nameservers {
				c.Nameservers = append(c.Nameservers, ip.String())
			}
			c.Searches = omitDuplicates(append([]string{ns + ".svc." + domain, "svc." + domain, domain}, host.Searches...))
			c.Options = slices.Clone(defaultClusterOptions)
			break
		}
		warnings = append(warnings, "no cluster DNS nameserver is known: the pod gets the machine's resolv.conf (dnsPolicy Default)")
		c = hostDefault(p.Host, host)
	default:
		c = hostDefault(p.Host, host)
	}

	if dc := p.Config; dc != nil {
		c.Nameservers = omitDuplicates(append(c.Nameservers, dc.Nameservers...))
		c.Searches = omitDuplicates(append(c.Searches, dc.Searches...))
		var opts []string
		for _, o := range dc.Options {
			if o.Value != nil {
				opts = append(opts, o.Name+":"+*o.Value)
			} else {
				opts = append(opts, o.Name)
			}
		}
		c.Options = mergeOptions(c.Options, opts)
	}

	if len(c.Nameservers) > maxNameservers {
		warnings = append(warnings, fmt.Sprintf("nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: %s",
			strings.Join(c.Nameservers[:maxNameservers], " ")))
		c.Nameservers = c.Nameservers[:maxNameservers]
	}
	var cut bool
	c.Searches, cut = searchFitsLimits(c.Searches)
	if cut {
		warnings = append(warnings, "search line limits were exceeded, some search paths have been omitted, the applied search line is: "+strings.Join(c.Searches, " "))
	}
	return c, warnings
}

// hostDefault is a Default pod's configuration: the machine's, or without
// one a local nameserver and the root search domain (the kubelet's answer
// to an empty --resolv-conf, which effectively disables lookups).
func hostDefault(configured *ResolvConf, host ResolvConf) ResolvConf {
	if configured == nil {
		return ResolvConf{Nameservers: []string{"127.0.0.1"}, Searches: []string{"."}}
	}
	return host
}

// podDNSType reduces a dnsPolicy to None, ClusterFirst or Default.
func podDNSType(policy corev1.DNSPolicy, hostNetwork bool) corev1.DNSPolicy {
	switch policy {
	case corev1.DNSNone:
		return corev1.DNSNone
	case corev1.DNSClusterFirstWithHostNet:
		return corev1.DNSClusterFirst
	case corev1.DNSClusterFirst, "":
		if !hostNetwork {
			return corev1.DNSClusterFirst
		}
		// A pod on the host's network cannot reach the cluster DNS by
		// the kubelet's reasoning: it uses the host's.
		return corev1.DNSDefault
	default:
		return corev1.DNSDefault
	}
}

// searchFitsLimits cuts a search list as the kubelet does: the first 32,
// without domains longer than 253, then whole domains from the end until
// the line fits 2048 characters.
func searchFitsLimits(search []string) ([]string, bool) {
	cut := false
	if len(search) > maxSearchPaths {
		search = search[:maxSearchPaths]
		cut = true
	}
	kept := search[:0:0]
	for _, s := range search {
		if len(s) > maxSearchDomainLen {
			cut = true
			continue
		}
		kept = append(kept, s)
	}
	search = kept
	line := len(strings.Join(search, " "))
	for line > maxSearchListChars && len(search) > 0 {
		line -= len(search[len(search)-1]) + 1
		search = search[:len(search)-1]
		cut = true
	}
	return search, cut
}

// mergeOptions merges resolv.conf options by name (the part before ':'):
// a later one replaces an earlier one in place, new names are appended.
func mergeOptions(base, more []string) []string {
	out := slices.Clone(base)
	for _, o := range more {
		name, _, _ := strings.Cut(o, ":")
		i := slices.IndexFunc(out, func(e string) bool {
			n, _, _ := strings.Cut(e, ":")
			return n == name
		})
		if i >= 0 {
			out[i] = o
		} else {
			out = append(out, o)
		}
	}
	return out
}

// omitDuplicates keeps the first of equal strings, in order.
func omitDuplicates(s []string) []string {
	seen := make(map[string]bool, len(s))
	out := make([]string, 0, len(s))
	for _, e := range s {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}
