package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"berth.dev/berth/nodes/agent"
)

// subPathsDir holds a container's subPath mounts (see subPathMount).
func subPathsDir(podDir, containerID string) string {
	return filepath.Join(podDir, "subpaths", containerID)
}

// volumeMounts turns the container's volumeMounts into OCI mounts, the
// shallowest first. A subPath is bind-mounted at a private path under the
// pod's directory first (subPathMount), and that path is mounted.
func volumeMounts(cfg agent.ContainerConfig, containerID string, privileged bool) ([]specs.Mount, error) {
	c := cfg.Container
	var out []specs.Mount
	for i, vm := range c.VolumeMounts {
		src, ok := cfg.Mounts[vm.Name]
		if !ok {
			return nil, configError("volume %q of volumeMount %s is not prepared", vm.Name, vm.MountPath)
		}
		if !filepath.IsAbs(vm.MountPath) {
			return nil, configError("volumeMount %s: mountPath is not absolute", vm.MountPath)
		}
		if err := checkSubPath(vm.SubPath); err != nil {
			return nil, err
		}
		if vm.SubPath != "" {
			target := filepath.Join(subPathsDir(cfg.Sandbox.Dir, containerID), strconv.Itoa(i))
			if err := subPathMount(src, vm.SubPath, target); err != nil {
				return nil, fmt.Errorf("volumeMount %s subPath %s: %w", vm.MountPath, vm.SubPath, err)
			}
			src = target
		}
		prop, err := mountPropagation(vm.MountPropagation, privileged)
		if err != nil {
			return nil, err
		}
		mode := "rw"
		if vm.ReadOnly {
			mode = "ro"
		}
		out = append(out, specs.Mount{
			Destination: filepath.Clean(vm.MountPath),
			Type:        "bind",
			Source:      src,
			Options:     []string{"rbind", prop, mode},
		})
	}
	// Parents before children, as Docker and the CRI plugin order them.
	sortByDepth(out)
	return out, nil
}

func sortByDepth(ms []specs.Mount) {
	depth := func(p string) int { return strings.Count(filepath.Clean(p), "/") }
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && depth(ms[j].Destination) < depth(ms[j-1].Destination); j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}

// subPathMount opens subPath inside the volume at root without leaving
// it (symlinks resolve within the volume, through openat2 where the
// kernel has it), creates it as a directory when it does not exist (as the
// kubelet does), and bind-mounts what it opened at target. The container
// is then given target: a symlink swapped into the volume afterwards
// cannot redirect the mount.
func subPathMount(root, subPath, target string) error {
	rootDir, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open volume: %w", err)
	}
	defer rootDir.Close()
	f, err := pathrs.OpenatInRoot(rootDir, subPath)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = pathrs.MkdirAllHandle(rootDir, subPath, 0o755)
	}
	if err != nil {
		return fmt.Errorf("open in volume: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := unmountAll(target); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return err
	}
	if fi.IsDir() {
		err = os.Mkdir(target, 0o755)
	} else {
		var t *os.File
		t, err = os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if t != nil {
			t.Close()
		}
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	src := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount: %w", err)
	}
	return nil
}

// unmountAll unmounts everything mounted at path (stacked mounts too).
func unmountAll(path string) error {
	for i := 0; i < 16; i++ {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted", path)
}

// removeSubPaths unmounts and removes a container's subPath mounts.
func removeSubPaths(podDir, containerID string) error {
	return removeDirWithMounts(subPathsDir(podDir, containerID))
}

// applyFSGroup gives the pod's emptyDir and files volumes that the
// container mounts to fsGroup, as the kubelet does: group ownership, the
// setgid bit on directories (new files inherit the group), and group
// read (files volumes) or read-write (emptyDir) permission. Volumes
// outside the pod's directory (hostPath) are never touched, nor is
// anything behind a symlink.
func applyFSGroup(cfg agent.ContainerConfig, gid int64) error {
	used := map[string]bool{}
	for _, vm := range cfg.Container.VolumeMounts {
		used[vm.Name] = true
	}
	for _, v := range cfg.Pod.Spec.Volumes {
		if !used[v.Name] || (v.EmptyDir == nil && v.Files == nil) {
			continue
		}
		dir, ok := cfg.Mounts[v.Name]
		if !ok || !within(cfg.Sandbox.Dir, dir) {
			continue
		}
		readOnly := v.Files != nil
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type()&fs.ModeSymlink != 0 {
				return unix.Lchown(p, -1, int(gid))
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if err := unix.Lchown(p, -1, int(gid)); err != nil {
				return err
			}
			mode := fi.Mode()
			perm := mode.Perm()
			switch {
			case mode.IsDir():
				perm |= 0o050 // g+rx
				if !readOnly {
					perm |= 0o020
				}
				return os.Chmod(p, perm|os.ModeSetgid|(mode&os.ModeSticky))
			case mode.IsRegular():
				if perm&0o400 != 0 {
					perm |= 0o040
				}
				if !readOnly && perm&0o200 != 0 {
					perm |= 0o020
				}
				return os.Chmod(p, perm)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("fsGroup on volume %s: %w", v.Name, err)
		}
	}
	return nil
}

// within reports whether p is dir or below it.
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}
