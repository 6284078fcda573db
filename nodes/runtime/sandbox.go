package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/runtime/netns"
)

// sandboxRecord is what the runtime keeps of a sandbox, one JSON file per
// pod under StateDir/sandboxes, so that a new Runtime finds it again.
type sandboxRecord struct {
	PodUID      string `json:"podUID"`
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	Hostname    string `json:"hostname"`
	HostNetwork bool   `json:"hostNetwork,omitempty"`
	NetNS       string `json:"netns,omitempty"`
	IPCNS       string `json:"ipcns"`
	UTSNS       string `json:"utsns,omitempty"`
	// PodIPs are the pod's addresses in the pod network (none while the
	// network namespace has only loopback).
	PodIPs    []string  `json:"podIPs,omitempty"`
	Dir       string    `json:"dir"`
	CreatedAt time.Time `json:"createdAt"`
}

func (s *sandboxRecord) sandbox() agent.Sandbox {
	return agent.Sandbox{PodUID: s.PodUID, Pod: s.Namespace + "/" + s.Name, NetNS: s.NetNS, Dir: s.Dir, PodIPs: slices.Clone(s.PodIPs)}
}

// The pod's files the runtime writes under its directory and mounts into
// every container.
func etcDir(podDir string) string { return filepath.Join(podDir, "etc") }

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// checkPodUID refuses a UID that cannot name a file or directory safely.
func checkPodUID(uid string) error {
	if !safeName.MatchString(uid) || strings.Contains(uid, "..") {
		return fmt.Errorf("%w: pod UID %q", api.ErrInvalid, uid)
	}
	return nil
}

func (r *Runtime) recordPath(uid string) string {
	return filepath.Join(sandboxRecordDir(r.opts.StateDir), uid+".json")
}

func (r *Runtime) readRecord(uid string) (*sandboxRecord, error) {
	b, err := os.ReadFile(r.recordPath(uid))
	if err != nil {
		return nil, err
	}
	var rec sandboxRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("sandbox record %s: %w", uid, err)
	}
	return &rec, nil
}

func (r *Runtime) writeRecord(rec *sandboxRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(r.recordPath(rec.PodUID), b, 0o600)
}

// writeFileAtomic writes data to a temporary file beside path, syncs it
// and renames it over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// podHostname is the pod's hostname as the kubelet sets it: spec.hostname,
// else the pod's name, cut to 63 characters without a trailing '-' or '.'.
func podHostname(pod *api.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// CreateSandbox makes the pod's network namespace (none with
// hostNetwork), attached to the pod network when one is set (see
// SetPodNetwork), IPC and UTS namespaces shared by its containers, its
// directory (StateDir/pods/<uid>) with the hosts, hostname and resolv.conf
// files its containers mount, and records it. A sandbox that exists is
// returned as it is, its namespaces made again if they were lost (a
// reboot).
func (r *Runtime) CreateSandbox(ctx context.Context, pod *api.Pod) (agent.Sandbox, error) {
	if err := checkPodUID(pod.UID); err != nil {
		return agent.Sandbox{}, err
	}
	rec, err := r.readRecord(pod.UID)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return agent.Sandbox{}, err
	}
	if rec != nil {
		if ok, err := r.sandboxIntact(rec); err != nil || ok {
			return rec.sandbox(), err
		}
		r.log.Info("sandbox namespaces lost; making them again", "pod", pod.Key(), "uid", pod.UID)
	} else {
		rec = &sandboxRecord{
			PodUID:      pod.UID,
			Namespace:   pod.Namespace,
			Name:        pod.Name,
			Hostname:    podHostname(pod),
			HostNetwork: pod.Spec.HostNetwork,
			Dir:         filepath.Join(podsDir(r.opts.StateDir), pod.UID),
			CreatedAt:   time.Now().UTC(),
		}
	}
	r.netMu.RLock()
	defer r.netMu.RUnlock()
	if err := r.makeSandbox(ctx, pod, rec, r.podNet); err != nil {
		// Undo it all, the namespaces even when DEL fails (the address is
		// then collected when the pod network is next set).
		cctx := context.WithoutCancel(ctx)
		if derr := r.detach(cctx, r.podNet, rec); derr != nil {
			r.log.Warn("detach a sandbox that failed", "pod", pod.Key(), "err", derr)
		}
		r.removeSandbox(cctx, rec, PodNetwork{})
		return agent.Sandbox{}, fmt.Errorf("create sandbox for %s: %w", pod.Key(), err)
	}
	r.log.Info("created sandbox", "pod", pod.Key(), "uid", pod.UID, "netns", rec.NetNS, "ips", rec.PodIPs)
	return rec.sandbox(), nil
}

// sandboxIntact reports whether every namespace the record names is still
// mounted.
func (r *Runtime) sandboxIntact(rec *sandboxRecord) (bool, error) {
	if rec.NetNS != "" {
		if ok, err := netns.Exists(rec.NetNS); err != nil || !ok {
			return false, err
		}
	}
	for _, p := range []string{rec.IPCNS, rec.UTSNS} {
		if p != "" && !isNSMount(p) {
			return false, nil
		}
	}
	return true, nil
}

func (r *Runtime) makeSandbox(ctx context.Context, pod *api.Pod, rec *sandboxRecord, pn PodNetwork) error {
	if err := os.MkdirAll(etcDir(rec.Dir), 0o755); err != nil {
		return err
	}
	rec.PodIPs = nil
	if !rec.HostNetwork {
		if rec.NetNS != "" {
			netns.Remove(rec.NetNS) // a stale file from before a reboot
		}
		p, err := netns.New(netnsDir(r.opts.StateDir))
		if err != nil {
			return err
		}
		rec.NetNS = p
		if pn.CNI != nil {
			if err := r.attach(ctx, pn.CNI, rec); err != nil {
				return err
			}
		}
	}
	base := filepath.Join(nsDir(r.opts.StateDir), rec.PodUID)
	rec.IPCNS = filepath.Join(base, "ipc")
	if !rec.HostNetwork {
		// With the host's network, the pod also has the host's hostname
		// (its UTS namespace), as the kubelet does it.
		rec.UTSNS = filepath.Join(base, "uts")
	}
	if err := newPersistentNS(rec.IPCNS, rec.UTSNS, rec.Hostname); err != nil {
		return err
	}
	if err := r.writePodEtc(rec, pod, pn); err != nil {
		return err
	}
	return r.writeRecord(rec)
}

// writePodEtc writes the hosts, hostname and resolv.conf files that every
// container of the pod mounts.
func (r *Runtime) writePodEtc(rec *sandboxRecord, pod *api.Pod, pn PodNetwork) error {
	dir := etcDir(rec.Dir)
	hostname := rec.Hostname
	var hosts []byte
	if rec.HostNetwork {
		// The host's own files, as the kubelet gives hostNetwork pods.
		b, err := os.ReadFile("/etc/hosts")
		if err != nil {
			return fmt.Errorf("hosts file: %w", err)
		}
		hosts = b
		if h, err := os.Hostname(); err == nil {
			hostname = h
		}
	} else {
		hosts = hostsFile(hostname, rec.PodIPs)
	}
	host, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	resolv := r.podResolvConf(pn, pod, host)
	for name, data := range map[string][]byte{
		"hosts":       hosts,
		"hostname":    []byte(hostname + "\n"),
		"resolv.conf": resolv,
	} {
		if err := writeFileAtomic(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("pod %s file: %w", name, err)
		}
	}
	return nil
}

// hostsFile is the pod's /etc/hosts: localhost and its hostname on its
// pod network addresses or, without any, on a loopback address.
func hostsFile(hostname string, podIPs []string) []byte {
	var b bytes.Buffer
	b.WriteString("# berth-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	if len(podIPs) == 0 {
		podIPs = []string{"127.0.1.1"}
	}
	for _, ip := range podIPs {
		fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
	}
	return b.Bytes()
}

// dnsOptions are a dnsConfig's options as resolv.conf writes them.
func dnsOptions(dc *corev1.PodDNSConfig) []string {
	var out []string
	for _, o := range dc.Options {
		if o.Value != nil {
			out = append(out, o.Name+":"+*o.Value)
		} else {
			out = append(out, o.Name)
		}
	}
	return out
}

// mergeResolvConf applies a pod's dnsConfig to the machine's resolv.conf
// as the kubelet does: nameservers and search domains added (the pod's
// first), options by name overriding.
func mergeResolvConf(base []byte, nameservers, searches, options []string) []byte {
	var baseNS, baseSearch, baseOpts []string
	sc := bufio.NewScanner(bytes.NewReader(base))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			baseNS = append(baseNS, f[1:]...)
		case "search", "domain":
			baseSearch = f[1:]
		case "options":
			baseOpts = append(baseOpts, f[1:]...)
		}
	}
	ns := dedup(append(slices.Clone(baseNS), nameservers...))
	if len(ns) > 3 { // the resolver reads three
		ns = ns[:3]
	}
	search := dedup(append(slices.Clone(searches), baseSearch...))
	opts := map[string]string{}
	for _, o := range append(baseOpts, options...) {
		name, _, _ := strings.Cut(o, ":")
		opts[name] = o
	}
	var b bytes.Buffer
	for _, n := range ns {
		fmt.Fprintf(&b, "nameserver %s\n", n)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	if len(opts) > 0 {
		names := make([]string, 0, len(opts))
		for _, o := range opts {
			names = append(names, o)
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "options %s\n", strings.Join(names, " "))
	}
	return b.Bytes()
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// RemoveSandbox removes the pod's containers that are left (killing
// them, as the CRI plugin's RemovePodSandbox does), then its namespaces,
// directory (unmounting what is mounted under it first), cgroup and
// record. A missing sandbox is not an error.
func (r *Runtime) RemoveSandbox(ctx context.Context, podUID string) error {
	if err := checkPodUID(podUID); err != nil {
		return err
	}
	var ids []string
	err := r.retry(ctx, func(ctx context.Context) error {
		infos, err := r.client.ContainerService().List(ctx, managedFilter+","+fmt.Sprintf("labels.%q==%q", api.LabelPodUID, podUID))
		ids = ids[:0]
		for _, info := range infos {
			ids = append(ids, info.ID)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("remove sandbox %s: %w", podUID, err)
	}
	for _, id := range ids {
		if err := r.RemoveContainer(ctx, id); err != nil {
			return fmt.Errorf("remove sandbox %s: %w", podUID, err)
		}
		r.log.Info("removed a container left in the sandbox", "uid", podUID, "id", id)
	}
	rec, err := r.readRecord(podUID)
	if errors.Is(err, os.ErrNotExist) {
		// Nothing recorded: still clear the paths the runtime would have
		// used, in case a creation died half-way.
		rec = &sandboxRecord{
			PodUID: podUID,
			Dir:    filepath.Join(podsDir(r.opts.StateDir), podUID),
			IPCNS:  filepath.Join(nsDir(r.opts.StateDir), podUID, "ipc"),
			UTSNS:  filepath.Join(nsDir(r.opts.StateDir), podUID, "uts"),
		}
	} else if err != nil {
		return err
	}
	if err := r.removeSandbox(ctx, rec, r.podNetwork()); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", podUID, err)
	}
	if err := os.Remove(r.recordPath(podUID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove sandbox %s: %w", podUID, err)
	}
	r.log.Info("removed sandbox", "uid", podUID)
	return nil
}

// removeSandbox undoes makeSandbox: CNI DEL first (while the namespace
// still holds the pod's end of its veth), then the namespaces, directory
// and cgroup. A failed DEL stops it, so that it is tried again with the
// record still there.
func (r *Runtime) removeSandbox(ctx context.Context, rec *sandboxRecord, pn PodNetwork) error {
	if err := r.detach(ctx, pn, rec); err != nil {
		return err
	}
	var errs []error
	if rec.NetNS != "" {
		errs = append(errs, netns.Remove(rec.NetNS))
	}
	for _, p := range []string{rec.IPCNS, rec.UTSNS} {
		if p != "" {
			errs = append(errs, removeNSMount(p))
		}
	}
	os.Remove(filepath.Join(nsDir(r.opts.StateDir), rec.PodUID))
	if rec.Dir != "" {
		errs = append(errs, removeDirWithMounts(rec.Dir))
	}
	errs = append(errs, removePodCgroup(r.CgroupParent(), rec.PodUID, r.cgroupV2))
	return errors.Join(errs...)
}

// ListSandboxes returns the sandboxes recorded under the state directory.
func (r *Runtime) ListSandboxes(ctx context.Context) ([]agent.Sandbox, error) {
	recs, err := r.records()
	if err != nil {
		return nil, err
	}
	out := make([]agent.Sandbox, 0, len(recs))
	for _, rec := range recs {
		out = append(out, rec.sandbox())
	}
	return out, nil
}

// records reads every sandbox record, sorted by pod UID.
func (r *Runtime) records() ([]*sandboxRecord, error) {
	ents, err := os.ReadDir(sandboxRecordDir(r.opts.StateDir))
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var out []*sandboxRecord
	for _, e := range ents {
		uid, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || checkPodUID(uid) != nil {
			continue
		}
		rec, err := r.readRecord(uid)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // removed meanwhile
			}
			return nil, fmt.Errorf("list sandboxes: %w", err)
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PodUID < out[j].PodUID })
	return out, nil
}

// removeDirWithMounts unmounts whatever is mounted at or under dir (the
// pod's tmpfs volumes), deepest first, then removes dir. RemoveAll does
// not follow symlinks out of dir.
func removeDirWithMounts(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	return os.RemoveAll(dir)
}

// mountsUnder lists the mount points at or under dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.Reverse(out) // later mounts may sit on earlier ones
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out, nil
}

// unescapeMountinfo undoes mountinfo's octal escapes ("\040" for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
