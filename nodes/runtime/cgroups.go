package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// isCgroupV2 reports whether the machine runs the unified hierarchy alone
// (runc decides the same way). Debian 12 with systemd does; this kind of
// machine without systemd may mount v1 controllers (with v2 beside them
// at /sys/fs/cgroup/unified, which runc then leaves alone).
func isCgroupV2() bool {
	var st unix.Statfs_t
	return unix.Statfs(cgroupRoot, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// podCgroup is a pod's cgroup under the agent's parent; its containers'
// cgroups are under it, named by container id.
func podCgroup(parent, podUID string) string {
	return parent + "/pod" + podUID
}

// cgroupDirs returns the directories of cgroup path in every hierarchy
// (with v1, one per mounted controller).
func cgroupDirs(path string, v2 bool) []string {
	if v2 {
		return []string{filepath.Join(cgroupRoot, path)}
	}
	ents, _ := os.ReadDir(cgroupRoot)
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join(cgroupRoot, e.Name(), path))
		}
	}
	return out
}

// removePodCgroup removes the pod's cgroup (runc removes its containers'
// own when they are deleted). A cgroup still in use stays, with an error.
func removePodCgroup(parent, podUID string, v2 bool) error {
	var errs []error
	for _, d := range cgroupDirs(podCgroup(parent, podUID), v2) {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// memoryDir is the memory controller's directory of cgroup path.
func memoryDir(path string, v2 bool) string {
	if v2 {
		return filepath.Join(cgroupRoot, path)
	}
	return filepath.Join(cgroupRoot, "memory", path)
}

// oomKills reads how many processes of cgroup path the kernel killed for
// running out of memory (v1 memory.oom_control, v2 memory.events).
func oomKills(path string, v2 bool) (int, error) {
	file := "memory.oom_control"
	if v2 {
		file = "memory.events"
	}
	f, err := os.Open(filepath.Join(memoryDir(path, v2), file))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == "oom_kill" {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, sc.Err()
}

// swapAccounting reports whether memory+swap can be limited (v1
// memory.memsw.*, v2 memory.swap.max), so that a memory limit also stops
// a container from swapping, as the CRI plugin does it.
func swapAccounting(v2 bool) bool {
	if v2 {
		// The root has no memory.swap.max; look at any child.
		m, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", "memory.swap.max"))
		return len(m) > 0
	}
	_, err := os.Stat(filepath.Join(cgroupRoot, "memory", "memory.memsw.limit_in_bytes"))
	return err == nil
}
