package agent

import (
	"bufio"
	"bytes"
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
	if v, err := m.rt.Version(ctx); err == nil {
		info.ContainerdVersion = v
	} else {
		m.log.Debug("runtime version", "err", err)
	}
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
	info.Pods = len(m.state.Desired.Pods)
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
	groups := map[string]bool{}
	for _, pid := range pids {
		if g := cgroupOf(pid); g != "" {
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
		dir := filepath.Join("/sys/fs/cgroup", g)
		if b, err := os.ReadFile(filepath.Join(dir, "memory.current")); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
				mem += n
			}
		}
		if usec, ok := cpuUsage(dir); ok {
			s := cpuSample{usec, now}
			next[g] = s
			if p, ok := u.last[g]; ok && now.After(p.at) && usec >= p.usec {
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

// cgroupOf is the cgroup v2 path of a process ("" if unknown).
func cgroupOf(pid uint32) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if p, ok := bytes.CutPrefix(line, []byte("0::")); ok {
			return string(p)
		}
	}
	return ""
}

func cpuUsage(dir string) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
