package resolve

import (
	"fmt"
	"path"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

// defaultMode is Kubernetes' default file mode of configMap, secret,
// downwardAPI and projected volumes.
const defaultMode int32 = 0o644

// volumes resolves the pod's volumes: configMap, secret, downwardAPI and
// projected ones become files, emptyDir and hostPath pass through, and
// any other kind is refused.
func (r *resolver) volumes(s *corev1.PodSpec) []api.Volume {
	if s.Volumes == nil {
		return nil
	}
	out := make([]api.Volume, 0, len(s.Volumes))
	for i := range s.Volumes {
		v := &s.Volumes[i]
		where := "volume " + quoteName(v.Name)
		src := &v.VolumeSource
		av := api.Volume{Name: v.Name}
		switch {
		case src.EmptyDir != nil:
			av.EmptyDir = src.EmptyDir.DeepCopy()
		case src.HostPath != nil:
			av.HostPath = src.HostPath.DeepCopy()
		case src.ConfigMap != nil:
			f := files{r: r, where: where}
			f.configMap(&src.ConfigMap.LocalObjectReference, src.ConfigMap.Items, src.ConfigMap.Optional, modeOr(src.ConfigMap.DefaultMode))
			av.Files = f.volume()
		case src.Secret != nil:
			f := files{r: r, where: where, holdsSecret: true}
			f.secret(src.Secret.SecretName, src.Secret.Items, src.Secret.Optional, modeOr(src.Secret.DefaultMode))
			av.Files = f.volume()
		case src.DownwardAPI != nil:
			f := files{r: r, where: where}
			f.downwardAPI(src.DownwardAPI.Items, modeOr(src.DownwardAPI.DefaultMode), s)
			av.Files = f.volume()
		case src.Projected != nil:
			av.Files = r.projected(where, src.Projected, s)
		default:
			kind := volumeKind(src)
			if kind == "" {
				r.fail(where, fmt.Errorf("no volume source is set: %w", ErrInvalid))
			} else {
				r.fail(where, fmt.Errorf("%s volumes: %w (emptyDir, hostPath, configMap, secret, downwardAPI and projected are)", kind, ErrNotSupported))
			}
			continue
		}
		out = append(out, av)
	}
	return out
}

func (r *resolver) projected(where string, p *corev1.ProjectedVolumeSource, s *corev1.PodSpec) *api.FilesVolume {
	mode := modeOr(p.DefaultMode)
	f := files{r: r, where: where}
	for i := range p.Sources {
		src := &p.Sources[i]
		f.where = fmt.Sprintf("%s: projected sources[%d]", where, i)
		switch {
		case src.ConfigMap != nil:
			f.configMap(&src.ConfigMap.LocalObjectReference, src.ConfigMap.Items, src.ConfigMap.Optional, mode)
		case src.Secret != nil:
			f.secret(src.Secret.Name, src.Secret.Items, src.Secret.Optional, mode)
			f.holdsSecret = true
		case src.DownwardAPI != nil:
			f.downwardAPI(src.DownwardAPI.Items, mode, s)
		case src.ServiceAccountToken != nil:
			r.fail(f.where, fmt.Errorf("serviceAccountToken: %w: berth has no API server to issue tokens", ErrNotSupported))
		case src.ClusterTrustBundle != nil:
			r.fail(f.where, fmt.Errorf("clusterTrustBundle: %w", ErrNotSupported))
		case src.PodCertificate != nil:
			r.fail(f.where, fmt.Errorf("podCertificate: %w", ErrNotSupported))
		default:
			r.fail(f.where, fmt.Errorf("no source is set: %w", ErrInvalid))
		}
	}
	f.where = where
	return f.volume()
}

// files collects the files of one volume; a later file of the same path
// replaces an earlier one, as the kubelet's payload map does.
type files struct {
	r     *resolver
	where string
	// holdsSecret: a secret volume, or a projected one with a secret
	// source; the agent keeps its files off disk and out of logs.
	holdsSecret bool
	byPath      map[string]api.File
}

func (f *files) add(p string, content []byte, mode int32) {
	// Checked as written, then cleaned, as the kubelet's atomic writer
	// does: "./a" is "a", but no ".." may climb out of the volume.
	msg := checkRelPath(p)
	if msg == "" {
		msg = checkRelPath(path.Clean(p)) // "./..x" is "..x"
	}
	if msg != "" {
		f.r.fail(f.where, fmt.Errorf("file %q: %s: %w", p, msg, ErrInvalid))
		return
	}
	p = path.Clean(p)
	if f.byPath == nil {
		f.byPath = map[string]api.File{}
	}
	f.byPath[p] = api.File{Path: p, Content: content, Mode: mode}
}

// volume checks the collected paths and modes and returns the volume,
// files sorted by path.
func (f *files) volume() *api.FilesVolume {
	out := &api.FilesVolume{Secret: f.holdsSecret, Files: make([]api.File, 0, len(f.byPath))}
	for _, p := range sortedKeys(f.byPath) {
		file := f.byPath[p]
		switch {
		case file.Mode == 0:
			// The wire cannot say 0000: 0 means the default there.
			f.r.fail(f.where, fmt.Errorf("file %q: mode 0000: %w", p, ErrNotSupported))
			continue
		case file.Mode < 0 || file.Mode > 0o777:
			f.r.fail(f.where, fmt.Errorf("file %q: mode %#o: must be between 0 and 0777: %w", p, file.Mode, ErrInvalid))
			continue
		}
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if _, ok := f.byPath[dir]; ok {
				f.r.fail(f.where, fmt.Errorf("file %q is below file %q: %w", p, dir, ErrInvalid))
			}
		}
		out.Files = append(out.Files, file)
	}
	return out
}

func (f *files) configMap(ref *corev1.LocalObjectReference, items []corev1.KeyToPath, optional *bool, mode int32) {
	cm := f.r.in.Sources.configMap(f.r.ns, ref.Name)
	if cm == nil {
		f.r.missing(f.where, optional, "configMap %s", quoteName(ref.Name))
		return
	}
	if len(items) == 0 {
		for k, v := range cm.Data {
			f.add(k, []byte(v), mode)
		}
		for k, v := range cm.BinaryData {
			f.add(k, slices.Clone(v), mode)
		}
		return
	}
	for _, it := range items {
		var content []byte
		if v, ok := cm.Data[it.Key]; ok {
			content = []byte(v)
		} else if v, ok := cm.BinaryData[it.Key]; ok {
			content = slices.Clone(v)
		} else {
			f.r.missing(f.where, optional, "configMap %s key %s", quoteName(ref.Name), quoteName(it.Key))
			continue
		}
		f.add(it.Path, content, itemMode(it.Mode, mode))
	}
}

func (f *files) secret(name string, items []corev1.KeyToPath, optional *bool, mode int32) {
	sec := f.r.in.Sources.secret(f.r.ns, name)
	if sec == nil {
		f.r.missing(f.where, optional, "secret %s", quoteName(name))
		return
	}
	if len(items) == 0 {
		for k, v := range sec.data {
			f.add(k, slices.Clone(v), mode)
		}
		return
	}
	for _, it := range items {
		v, ok := sec.data[it.Key]
		if !ok {
			f.r.missing(f.where, optional, "secret %s key %s", quoteName(name), quoteName(it.Key))
			continue
		}
		f.add(it.Path, slices.Clone(v), itemMode(it.Mode, mode))
	}
}

func (f *files) downwardAPI(items []corev1.DownwardAPIVolumeFile, mode int32, s *corev1.PodSpec) {
	for _, it := range items {
		at := "item " + quoteName(it.Path)
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = f.r.volumeField(it.FieldRef)
		case it.ResourceFieldRef != nil:
			ref := it.ResourceFieldRef
			c := findContainer(s, ref.ContainerName)
			if c == nil {
				err = fmt.Errorf("resourceFieldRef: container %s: %w", quoteName(ref.ContainerName), ErrInvalid)
				break
			}
			v, err = f.r.resourceValue(ref, c)
		default:
			err = fmt.Errorf("neither fieldRef nor resourceFieldRef is set: %w", ErrInvalid)
		}
		if err != nil {
			f.r.fail(f.where+": "+at, err)
			continue
		}
		f.add(it.Path, []byte(v), itemMode(it.Mode, mode))
	}
}

func modeOr(m *int32) int32 {
	if m == nil {
		return defaultMode
	}
	return *m
}

func itemMode(m *int32, def int32) int32 {
	if m == nil {
		return def
	}
	return *m
}

// checkRelPath accepts a relative, slash-separated path below the
// volume's root, without ".." elements and not starting with ".." (names
// the kubelet's ..data swap reserves), as the agent does once cleaned.
func checkRelPath(p string) string {
	switch {
	case p == "":
		return "path is empty"
	case strings.HasPrefix(p, "/"):
		return "path is absolute"
	case strings.HasPrefix(p, ".."):
		return `path must not start with ".."`
	case slices.Contains(strings.Split(p, "/"), ".."):
		return `path contains ".."`
	case strings.ContainsRune(p, 0):
		return "path contains a NUL byte"
	case path.Clean(p) == ".":
		return "path names the volume itself"
	}
	return ""
}

// volumeKind names the source a volume sets ("persistentVolumeClaim"),
// by its JSON field name, or "" when it sets none.
func volumeKind(src *corev1.VolumeSource) string {
	v := reflect.ValueOf(src).Elem()
	t := v.Type()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			return name
		}
	}
	return ""
}
