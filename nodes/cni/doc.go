// Package cni owns a machine's pod network: it attaches and detaches pods'
// network namespaces with the standard CNI plugins (Debian's
// containernetworking-plugins: bridge with hairpin mode, host-local IPAM,
// loopback), driven through github.com/containerd/go-cni, collects
// host-local addresses and cached results that no live pod owns, and routes
// other machines' pod CIDRs via their addresses (host-gw).
//
// The conflist is generated from Config; nothing is read from /etc/cni and
// nothing is written to /var/lib/cni: host-local's data dir and libcni's
// result cache live under Config.StateDir, so machines that share one
// filesystem (the lab) keep their allocations apart. The bridge plugin's
// ipMasq and the portmap plugin are not used (Debian's 1.1.1 plugins write
// iptables rules); masquerade is berth's own nftables table.
//
// What this package owns on a machine: the bridge named in Config and the
// veths the plugins make on it, the files under Config.StateDir, the
// net.ipv4.ip_forward sysctl, and the main table's routes carrying
// RouteProtocol. It never removes a route it did not add.
package cni
