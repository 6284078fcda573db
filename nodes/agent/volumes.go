package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

// dataDir is the symlink that names the current content of a files volume;
// swapping it is the kubelet's atomic update of configMap and secret
// volumes (readers see the old set or the new, never a mix).
const (
	dataDir    = "..data"
	dataDirTmp = "..data_tmp"
)

// prepareVolumes makes every volume of pod present under podDir and
// returns the host path of each, for ContainerConfig.Mounts. It is
// idempotent; files volumes whose content changed are swapped in place.
func prepareVolumes(pod *api.Pod, podDir string) (map[string]string, error) {
	mounts := make(map[string]string, len(pod.Spec.Volumes))
	var fsGroup *int64
	if sc := pod.Spec.SecurityContext; sc != nil {
		fsGroup = sc.FSGroup
	}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		dir := filepath.Join(podDir, "volumes", v.Name)
		switch {
		case v.EmptyDir != nil:
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			os.Chmod(dir, 0o777) // MkdirAll's mode is masked by umask
			if v.EmptyDir.Medium == corev1.StorageMediumMemory {
				size := ""
				if v.EmptyDir.SizeLimit != nil && !v.EmptyDir.SizeLimit.IsZero() {
					size = "size=" + strconv.FormatInt(v.EmptyDir.SizeLimit.Value(), 10)
				}
				if err := mountTmpfs(dir, "mode=1777", size); err != nil {
					return nil, fmt.Errorf("volume %s: %w", v.Name, err)
				}
			}
			if fsGroup != nil {
				os.Chown(dir, -1, int(*fsGroup))
			}
			mounts[v.Name] = dir
		case v.HostPath != nil:
			if err := checkHostPath(v.HostPath); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			mounts[v.Name] = v.HostPath.Path
		case v.Files != nil:
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			if v.Files.Secret {
				// Secrets stay off disk where possible; without the
				// privilege to mount, they are still written 0400.
				mountTmpfs(dir, "mode=0755")
			}
			if err := writeFilesAtomic(dir, v.Files, fsGroup); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			mounts[v.Name] = dir
		}
	}
	return mounts, nil
}

func checkHostPath(h *corev1.HostPathVolumeSource) error {
	t := corev1.HostPathUnset
	if h.Type != nil {
		t = *h.Type
	}
	fi, err := os.Stat(h.Path)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("hostPath %s: %w", h.Path, err)
	}
	want := func(ok bool, what string) error {
		if !exists {
			return fmt.Errorf("hostPath type check failed: %s does not exist", h.Path)
		}
		if !ok {
			return fmt.Errorf("hostPath type check failed: %s is not a %s", h.Path, what)
		}
		return nil
	}
	switch t {
	case corev1.HostPathUnset:
		return nil
	case corev1.HostPathDirectoryOrCreate:
		if !exists {
			if err := os.MkdirAll(h.Path, 0o755); err != nil {
				return fmt.Errorf("hostPath %s: %w", h.Path, err)
			}
			return nil
		}
		return want(fi.IsDir(), "directory")
	case corev1.HostPathDirectory:
		return want(exists && fi.IsDir(), "directory")
	case corev1.HostPathFileOrCreate:
		if !exists {
			if err := os.MkdirAll(filepath.Dir(h.Path), 0o755); err != nil {
				return fmt.Errorf("hostPath %s: %w", h.Path, err)
			}
			f, err := os.OpenFile(h.Path, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("hostPath %s: %w", h.Path, err)
			}
			return f.Close()
		}
		return want(fi.Mode().IsRegular(), "file")
	case corev1.HostPathFile:
		return want(exists && fi.Mode().IsRegular(), "file")
	case corev1.HostPathSocket:
		return want(exists && fi.Mode()&fs.ModeSocket != 0, "socket")
	case corev1.HostPathCharDev:
		return want(exists && fi.Mode()&fs.ModeCharDevice != 0, "character device")
	case corev1.HostPathBlockDev:
		return want(exists && fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0, "block device")
	}
	return fmt.Errorf("hostPath %s: unknown type %q", h.Path, t)
}

// fileMode is a file's permission bits: its Mode, else 0644 (0400 for
// secrets).
func fileMode(v *api.FilesVolume, f *api.File) fs.FileMode {
	if f.Mode != 0 {
		return fs.FileMode(f.Mode) & fs.ModePerm
	}
	if v.Secret {
		return 0o400
	}
	return 0o644
}

// writeFilesAtomic makes dir hold exactly v's files, the kubelet's way:
// the files live in a timestamped directory that the ..data symlink names,
// and each top-level entry is a symlink through ..data. A change writes a
// new timestamped directory and renames a new symlink over ..data, so
// readers never see a half-written set.
func writeFilesAtomic(dir string, v *api.FilesVolume, fsGroup *int64) error {
	if filesCurrent(dir, v) {
		return nil
	}
	old, _ := os.Readlink(filepath.Join(dir, dataDir))
	ts, err := os.MkdirTemp(dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05.")) // names start with ".."
	if err != nil {
		return err
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	for i := range v.Files {
		f := &v.Files[i]
		p := filepath.Join(ts, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Content, 0o600); err != nil {
			return err
		}
		if fsGroup != nil {
			if err := os.Chown(p, -1, int(*fsGroup)); err != nil {
				return err
			}
		}
		if err := os.Chmod(p, fileMode(v, f)); err != nil {
			return err
		}
	}
	tmp := filepath.Join(dir, dataDirTmp)
	os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataDir)); err != nil {
		return err
	}

	// User-visible names: one symlink per top-level entry.
	top := map[string]bool{}
	for _, f := range v.Files {
		top[strings.SplitN(f.Path, "/", 2)[0]] = true
	}
	for name := range top {
		link := filepath.Join(dir, name)
		want := filepath.Join(dataDir, name)
		if got, err := os.Readlink(link); err == nil && got == want {
			continue
		}
		os.RemoveAll(link)
		if err := os.Symlink(want, link); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "..") && !top[e.Name()] {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	if old != "" && old != filepath.Base(ts) && strings.HasPrefix(old, "..") && !strings.Contains(old, "/") {
		os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

// filesCurrent reports whether dir's ..data holds exactly v's files, with
// their content and modes.
func filesCurrent(dir string, v *api.FilesVolume) bool {
	data := filepath.Join(dir, dataDir)
	want := map[string]bool{}
	for i := range v.Files {
		f := &v.Files[i]
		want[f.Path] = true
		p := filepath.Join(data, filepath.FromSlash(f.Path))
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != fileMode(v, f) {
			return false
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, f.Content) {
			return false
		}
	}
	n := 0
	err := filepath.WalkDir(data+"/", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			n++
		}
		return nil
	})
	return err == nil && n == len(want)
}

// mountTmpfs mounts a tmpfs on dir unless one is there already.
func mountTmpfs(dir string, opts ...string) error {
	if isMountPoint(dir) {
		return nil
	}
	var o []string
	for _, s := range opts {
		if s != "" {
			o = append(o, s)
		}
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, strings.Join(o, ",")); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// isMountPoint: dir sits on another device than its parent.
func isMountPoint(dir string) bool {
	var st, pst unix.Stat_t
	if unix.Stat(dir, &st) != nil || unix.Stat(filepath.Dir(dir), &pst) != nil {
		return false
	}
	return st.Dev != pst.Dev
}

// removePodDir unmounts whatever is mounted under dir (tmpfs volumes),
// deepest first, and removes it.
func removePodDir(dir string) error {
	if dir == "" || dir == "/" {
		return nil
	}
	for _, m := range mountsUnder(dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	return os.RemoveAll(dir)
}

// mountsUnder lists mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeOctal(fields[4])
		if strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out
}

func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
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
