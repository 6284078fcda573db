package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/cni"
	"berth.dev/berth/nodes/dns"
)

// PodNetwork is how new sandboxes join the machine's pod network.
type PodNetwork struct {
	// CNI attaches each new sandbox's network namespace (eth0 with an
	// address of the pod CIDR); nil leaves pods with loopback only.
	CNI *cni.Network
	// DNS is the cluster DNS address pods are given in their resolv.conf
	// (dnsPolicy ClusterFirst); invalid means the machine's resolv.conf,
	// with the pod's dnsConfig merged in.
	DNS netip.Addr
	// Domain is the cluster domain (dns.DefaultDomain when empty).
	Domain string
}

// SetPodNetwork sets how sandboxes made from now on are networked. Pods
// already running keep what they have; a sandbox always gets CNI DEL when
// removed while a pod network is set. When the CNI network is a new one,
// the addresses and cached results its state holds for pods that have no
// sandbox any more (an agent that died between ADD and its record, or
// before a DEL) are collected first.
func (r *Runtime) SetPodNetwork(ctx context.Context, pn PodNetwork) error {
	// The agent sets the pod network with every Network it applies, and
	// mostly it has not changed: taking the write lock then would wait for
	// every sandbox being made (CNI ADD, ~100-300 ms) and hold up the next
	// ones behind it, in the middle of a rollout.
	r.netMu.RLock()
	same := r.podNet == pn
	r.netMu.RUnlock()
	if same {
		return nil
	}
	r.netMu.Lock()
	defer r.netMu.Unlock()
	if pn.CNI != nil && pn.CNI != r.podNet.CNI {
		live := func(podID string) bool {
			_, err := os.Stat(r.recordPath(podID))
			return err == nil || !errors.Is(err, os.ErrNotExist)
		}
		collected, err := pn.CNI.GC(ctx, live)
		if err != nil {
			return fmt.Errorf("set pod network: %w", err)
		}
		if len(collected) > 0 {
			r.log.Info("collected pod network addresses of pods that are gone", "pods", collected)
		}
		if r.podNet.CNI == nil {
			r.noteLoopbackOnly()
		}
	}
	r.podNet = pn
	return nil
}

// noteLoopbackOnly says which running pods were made before the pod
// network was known: they keep loopback only until they are made again.
func (r *Runtime) noteLoopbackOnly() {
	recs, err := r.records()
	if err != nil {
		r.log.Warn("list sandboxes", "err", err)
		return
	}
	var pods []string
	for _, rec := range recs {
		if !rec.HostNetwork && len(rec.PodIPs) == 0 {
			pods = append(pods, rec.Namespace+"/"+rec.Name)
		}
	}
	if len(pods) > 0 {
		r.log.Info("pod network set; pods made before it keep running with loopback only until they are replaced", "pods", pods)
	}
}

func (r *Runtime) podNetwork() PodNetwork {
	r.netMu.RLock()
	defer r.netMu.RUnlock()
	return r.podNet
}

// podLabels are the CNI_ARGS a pod's plugins get, as the CRI plugin
// passes them.
func podLabels(rec *sandboxRecord) map[string]string {
	return map[string]string{
		"K8S_POD_NAMESPACE":          rec.Namespace,
		"K8S_POD_NAME":               rec.Name,
		"K8S_POD_UID":                rec.PodUID,
		"K8S_POD_INFRA_CONTAINER_ID": rec.PodUID,
	}
}

// attach connects the sandbox's network namespace to the pod network and
// records its addresses.
func (r *Runtime) attach(ctx context.Context, n *cni.Network, rec *sandboxRecord) error {
	att, err := n.Attach(ctx, rec.PodUID, rec.NetNS, podLabels(rec))
	if err != nil {
		return err
	}
	rec.PodIPs = rec.PodIPs[:0]
	for _, p := range att.IPs {
		rec.PodIPs = append(rec.PodIPs, p.Addr().String())
	}
	return nil
}

// detach runs CNI DEL for the sandbox when a pod network is set; without
// one, a sandbox that has addresses keeps them in host-local's store until
// the next GC.
func (r *Runtime) detach(ctx context.Context, pn PodNetwork, rec *sandboxRecord) error {
	if rec.HostNetwork {
		return nil
	}
	if pn.CNI == nil {
		if len(rec.PodIPs) > 0 {
			r.log.Warn("no pod network set: the sandbox's addresses are collected later", "uid", rec.PodUID, "ips", rec.PodIPs)
		}
		return nil
	}
	return pn.CNI.Detach(ctx, rec.PodUID, rec.NetNS)
}

// podResolvConf is the pod's resolv.conf: the kubelet's rules with the
// cluster DNS when the pod network has one, else (as before there was a
// pod network) the machine's file with the pod's dnsConfig merged in.
// host is the machine's resolv.conf, nil when it has none.
func (r *Runtime) podResolvConf(pn PodNetwork, pod *api.Pod, host []byte) []byte {
	if !pn.DNS.IsValid() {
		if dc := pod.Spec.DNSConfig; dc != nil {
			return mergeResolvConf(host, dc.Nameservers, dc.Searches, dnsOptions(dc))
		}
		return host
	}
	var hostConf *dns.ResolvConf
	if host != nil {
		if c, err := dns.ParseResolvConf(bytes.NewReader(host)); err == nil {
			hostConf = &c
		}
	}
	c, warnings := dns.PodResolvConf(dns.PodDNS{
		Namespace:     pod.Namespace,
		ClusterDomain: pn.Domain,
		Nameservers:   []netip.Addr{pn.DNS},
		Policy:        pod.Spec.DNSPolicy,
		HostNetwork:   pod.Spec.HostNetwork,
		Config:        pod.Spec.DNSConfig,
		Host:          hostConf,
	})
	for _, w := range warnings {
		r.log.Warn("pod resolv.conf", "pod", pod.Key(), "warning", w)
	}
	return c.Bytes()
}
