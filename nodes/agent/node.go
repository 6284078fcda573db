package agent

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/nodes/api"
)

// Node describes the machine (see httpapi.Backend): capacity from
// /proc/meminfo and the CPU count, allocatable as capacity less the
// reserve, usage summed from the cgroups of the pods' running containers.
func (m *Manager) Node(ctx context.Context) (api.NodeInfo, error) {
	info := api.NodeInfo{
		Name:         m.opts.NodeName,
		AgentVersion: m.opts.AgentVersion,
		APIVersion:   api.Version,
		RuncVersion:  m.opts.RuncVersion,
		OS:           runtime.GOOS,
		Arch:         runtime.GOARCH,
		StartedAt:    m.started,
	}
	// A short wait: a machine whose containerd is down must still answer
	// at once, saying so, with the version last seen.
	vctx, cancel := context.WithTimeout(ctx, runtimeVersionTimeout)
	v, err := m.rt.Version(vctx)
	cancel()
	m.mu.Lock()
	if err == nil {
		m.runtimeVersion = v
	} else {
		info.RuntimeError = err.Error()
		m.log.Debug("runtime version", "err", err)
	}
	info.ContainerdVersion = m.runtimeVersion
	m.mu.Unlock()
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		info.KernelVersion = unix.ByteSliceToString(uts.Release[:])
	}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		info.BootID = strings.TrimSpace(string(b))
	}
	info.Capacity = corev1.ResourceList{
		corev1.ResourceCPU:  *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourcePods: *resource.NewQuantity(int64(m.opts.MaxPods), resource.DecimalSI),
	}
	if mem, err := memTotal(); err == nil {
		info.Capacity[corev1.ResourceMemory] = *resource.NewQuantity(mem, resource.BinarySI)
	}
	info.Allocatable = allocatable(info.Capacity, m.opts.Reserved)

	m.mu.Lock()
	info.Generation = m.state.Desired.Generation
	info.DesiredDigest = m.desiredDigest
	info.Pods = len(m.state.Desired.Pods)
	info.Network = m.networkStatusLocked()
	var pids []uint32
	for _, c := range m.cache.containers {
		if c.State == StateRunning && c.Pid > 0 {
			pids = append(pids, c.Pid)
		}
	}
	m.mu.Unlock()
	info.Usage = m.usage.measure(pids, time.Now())
	return info, nil
}

// runtimeVersionTimeout bounds how long Node waits for containerd.
const runtimeVersionTimeout = time.Second

// allocatable is capacity minus reserved, never below zero.
func allocatable(capacity, reserved corev1.ResourceList) corev1.ResourceList {
	out := corev1.ResourceList{}
	for name, q := range capacity {
		a := q.DeepCopy()
		if r, ok := reserved[name]; ok {
			a.Sub(r)
			if a.Sign() < 0 {
				a = *resource.NewQuantity(0, q.Format)
			}
		}
		out[name] = a
	}
	return out
}

func memTotal() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, err
				}
				return kb * 1024, nil
			}
		}
	}
	return 0, fmt.Errorf("no MemTotal in /proc/meminfo")
}

// usageMeter sums memory.current of the containers' cgroups (v2) and
// derives CPU use from cpu.stat between two measurements.
type usageMeter struct {
	mu   sync.Mutex
	last map[string]cpuSample // by cgroup
}

type cpuSample struct {
	usec uint64
	at   time.Time
}

func (u *usageMeter) measure(pids []uint32, now time.Time) corev1.ResourceList {
	groups := map[cgroupPaths]bool{}
	for _, pid := range pids {
		if g, ok := cgroupOf(pid); ok {
			groups[g] = true
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.last == nil {
		u.last = map[string]cpuSample{}
	}
	var mem int64
	var milli float64
	next := map[string]cpuSample{}
	for g := range groups {
		if n, ok := g.memory(); ok {
			mem += n
		}
		if usec, ok := g.cpuUsec(); ok {
			s := cpuSample{usec, now}
			next[g.cpu] = s
			if p, ok := u.last[g.cpu]; ok && now.After(p.at) && usec >= p.usec {
				milli += float64(usec-p.usec) / 1e3 / now.Sub(p.at).Seconds()
			}
		}
	}
	u.last = next
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(int64(milli), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(mem, resource.BinarySI),
	}
}

// cgroupPaths are where a process's memory and CPU figures are: one
// directory on cgroup v2, the memory and cpuacct controllers' on v1.
type cgroupPaths struct {
	v1       bool
	mem, cpu string // directories under /sys/fs/cgroup
}

// cgroupOf reads /proc/PID/cgroup.
func cgroupOf(pid uint32) (cgroupPaths, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return cgroupPaths{}, false
	}
	return parseCgroup(b)
}

// parseCgroup reads a /proc/PID/cgroup file: the v1 memory and cpuacct
// lines when there are any, else the v2 "0::" line.
func parseCgroup(b []byte) (cgroupPaths, bool) {
	var v1, v2 cgroupPaths
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" {
			v2 = cgroupPaths{mem: f[2], cpu: f[2]}
			continue
		}
		for _, ctl := range strings.Split(f[1], ",") {
			switch ctl {
			case "memory":
				v1.mem = filepath.Join("memory", f[2])
			case "cpuacct":
				v1.cpu = filepath.Join(f[1], f[2])
			}
		}
	}
	if v1.mem != "" || v1.cpu != "" {
		v1.v1 = true
		return v1, true
	}
	return v2, v2.mem != ""
}

// memory is the working set in bytes, as the kubelet counts it: usage
// less inactive file pages.
func (g cgroupPaths) memory() (int64, bool) {
	dir := filepath.Join(cgroupRoot, g.mem)
	usageFile, statKey := "memory.current", "inactive_file "
	if g.v1 {
		usageFile, statKey = "memory.usage_in_bytes", "total_inactive_file "
	}
	usage, ok := readInt(filepath.Join(dir, usageFile))
	if !ok {
		return 0, false
	}
	if inactive, ok := statValue(filepath.Join(dir, "memory.stat"), statKey); ok && uint64(usage) >= inactive {
		usage -= int64(inactive)
	}
	return usage, true
}

// cpuUsec is the CPU time used, in microseconds.
func (g cgroupPaths) cpuUsec() (uint64, bool) {
	dir := filepath.Join(cgroupRoot, g.cpu)
	if g.v1 {
		ns, ok := readInt(filepath.Join(dir, "cpuacct.usage"))
		return uint64(ns) / 1000, ok && ns >= 0
	}
	return statValue(filepath.Join(dir, "cpu.stat"), "usage_usec ")
}

// cgroupRoot is where the cgroup file systems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

func readInt(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}

// statValue reads the value of key (with its trailing space) in a
// "key value" per line file.
func statValue(path, key string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
