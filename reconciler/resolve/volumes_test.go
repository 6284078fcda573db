package resolve

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/nodes/api"
)

func cmVolume(name, cm string, items []corev1.KeyToPath, mode *int32, optional *bool) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: cm}, Items: items, DefaultMode: mode, Optional: optional,
	}}}
}

func secretVolume(name, secret string, items []corev1.KeyToPath, mode *int32, optional *bool) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: secret, Items: items, DefaultMode: mode, Optional: optional,
	}}}
}

// fileSummary lists a volume's files as "path mode len" lines: content is
// compared separately, so that no test message prints it.
func fileSummary(v *api.FilesVolume) string {
	var b strings.Builder
	if v.Secret {
		b.WriteString("secret\n")
	}
	for _, f := range v.Files {
		fmt.Fprintf(&b, "%s %#o %d\n", f.Path, f.Mode, len(f.Content))
	}
	return b.String()
}

func TestVolumes(t *testing.T) {
	tests := []struct {
		name string
		vol  corev1.Volume
		// files is fileSummary of the result; content the expected
		// content of some files, by path.
		files   string
		content map[string]string
		errs    []string
	}{
		{
			name:  "configMap: every key, data and binaryData, default mode",
			vol:   cmVolume("config", "app-config", nil, nil, nil),
			files: "1-starts-num 0644 2\nDATABASE_HOST 0644 23\nDATABASE_PORT 0644 4\nLOG_LEVEL 0644 4\nlogo.png 0644 5\nnginx.conf 0644 22\nprice 0644 15\n",
			content: map[string]string{
				"nginx.conf": "server { listen 80; }\n",
				"logo.png":   "\x89PNG\x00",
				"price":      "$5 $(LOG_LEVEL)",
			},
		},
		{
			name: "configMap: items with paths and modes, defaultMode",
			vol: cmVolume("config", "app-config", []corev1.KeyToPath{
				{Key: "nginx.conf", Path: "conf.d/default.conf"},
				{Key: "logo.png", Path: "img/logo.png", Mode: ptr(int32(0o600))},
				{Key: "LOG_LEVEL", Path: "./level"},
			}, ptr(int32(0o440)), nil),
			files:   "conf.d/default.conf 0440 22\nimg/logo.png 0600 5\nlevel 0440 4\n",
			content: map[string]string{"conf.d/default.conf": "server { listen 80; }\n"},
		},
		{
			name:  "configMap: optional and missing is an empty volume",
			vol:   cmVolume("config", "nope", nil, nil, ptr(true)),
			files: "",
		},
		{
			name:  "configMap: optional, a missing key is left out",
			vol:   cmVolume("config", "app-config", []corev1.KeyToPath{{Key: "nope", Path: "a"}, {Key: "LOG_LEVEL", Path: "b"}}, nil, ptr(true)),
			files: "b 0644 4\n",
		},
		{
			name: "configMap: missing ConfigMap and key",
			vol:  cmVolume("config", "nope", nil, nil, nil),
			errs: []string{"pod default/web-0: volume config: configMap nope: not found"},
		},
		{
			name: "configMap: missing key",
			vol:  cmVolume("config", "app-config", []corev1.KeyToPath{{Key: "nope", Path: "a"}, {Key: "LOG_LEVEL", Path: "b"}}, nil, nil),
			errs: []string{"pod default/web-0: volume config: configMap app-config key nope: not found"},
		},
		{
			name:    "secret: every key, stringData over data, marked secret",
			vol:     secretVolume("creds", "db-creds", nil, nil, nil),
			files:   fmt.Sprintf("secret\npassword 0644 %d\nusername 0644 5\n", len(secretPassword)),
			content: map[string]string{"password": secretPassword, "username": "admin"},
		},
		{
			name:  "secret: items and modes",
			vol:   secretVolume("tls", "tls", []corev1.KeyToPath{{Key: "tls.key", Path: "key.pem", Mode: ptr(int32(0o400))}, {Key: "tls.crt", Path: "cert.pem"}}, ptr(int32(0o640)), nil),
			files: fmt.Sprintf("secret\ncert.pem 0640 4\nkey.pem 0400 %d\n", len(secretTLSKey)),
		},
		{
			name:  "secret: optional and missing",
			vol:   secretVolume("creds", "nope", nil, nil, ptr(true)),
			files: "secret\n",
		},
		{
			name: "secret: missing Secret and key",
			vol:  secretVolume("creds", "db-creds", []corev1.KeyToPath{{Key: "passwd", Path: "p"}}, nil, nil),
			errs: []string{"pod default/web-0: volume creds: secret db-creds key passwd: not found"},
		},
		{
			name: "downwardAPI: metadata and resources",
			vol: corev1.Volume{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
				DefaultMode: ptr(int32(0o444)),
				Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.labels"}},
					{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
					{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}, Mode: ptr(int32(0o400))},
					{Path: "meta/uid", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}},
					{Path: "app", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}},
					{Path: "cpu_limit", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "web", Resource: "limits.cpu", Divisor: resource.MustParse("1m")}},
					{Path: "mem_limit", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "web", Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}},
				},
			}}},
			files: "annotations 0444 38\napp 0444 3\ncpu_limit 0444 4\nlabels 0444 22\nmem_limit 0444 4\nmeta/uid 0444 8\nname 0400 5\n",
			content: map[string]string{
				"labels":      "app=\"web\"\ntier=\"front\"",
				"annotations": "Example.COM/Note=\"x\\\"y\"\nowner=\"team-a\"",
				"name":        "web-0", "meta/uid": "uid-1234", "app": "web",
				"cpu_limit": "4000", "mem_limit": "8192",
			},
		},
		{
			name: "downwardAPI: what volumes cannot see",
			vol: corev1.Volume{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
				Items: []corev1.DownwardAPIVolumeFile{
					{Path: "node", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}},
					{Path: "ip", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}},
					{Path: "cpu", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "nosuch", Resource: "limits.cpu"}},
					{Path: "nothing"},
				},
			}}},
			errs: []string{
				"pod default/web-0: volume podinfo: item node: fieldRef spec.nodeName: not supported",
				"pod default/web-0: volume podinfo: item ip: fieldRef status.podIP: not supported",
				"pod default/web-0: volume podinfo: item cpu: resourceFieldRef: container nosuch: invalid",
				"pod default/web-0: volume podinfo: item nothing: neither fieldRef nor resourceFieldRef is set: invalid",
			},
		},
		{
			name: "projected: configMap, secret and downwardAPI in one, later paths win",
			vol: corev1.Volume{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				DefaultMode: ptr(int32(0o440)),
				Sources: []corev1.VolumeProjection{
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Items: []corev1.KeyToPath{{Key: "LOG_LEVEL", Path: "level"}, {Key: "DATABASE_PORT", Path: "shared"}}}},
					{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "api-token"}, Items: []corev1.KeyToPath{{Key: "token", Path: "token", Mode: ptr(int32(0o400))}}}},
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "shared", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Optional: ptr(true)}},
				},
			}}},
			files:   fmt.Sprintf("secret\nlevel 0440 4\nshared 0440 5\ntoken 0400 %d\n", len(secretToken)),
			content: map[string]string{"shared": "web-0", "token": secretToken},
		},
		{
			name: "projected: sources berth cannot provide, said by position",
			vol: corev1.Volume{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}},
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr(int64(3600))}},
					{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{Path: "ca"}},
					{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}}},
				},
			}}},
			errs: []string{
				"pod default/web-0: volume kube-api-access: projected sources[1]: serviceAccountToken: not supported: berth has no API server to issue tokens",
				"pod default/web-0: volume kube-api-access: projected sources[2]: clusterTrustBundle: not supported",
				"pod default/web-0: volume kube-api-access: projected sources[3]: secret gone: not found",
			},
		},
		{
			name: "paths that would leave the volume, and files below files",
			vol: cmVolume("config", "app-config", []corev1.KeyToPath{
				{Key: "LOG_LEVEL", Path: "../escape"},
				{Key: "LOG_LEVEL", Path: "/abs"},
				{Key: "LOG_LEVEL", Path: "a/../../b"},
				{Key: "LOG_LEVEL", Path: "..data"},
				{Key: "LOG_LEVEL", Path: "./..x"},
				{Key: "LOG_LEVEL", Path: "dir"},
				{Key: "DATABASE_PORT", Path: "dir/file"},
			}, nil, nil),
			errs: []string{
				`pod default/web-0: volume config: file "../escape": path must not start with "..": invalid`,
				`pod default/web-0: volume config: file "/abs": path is absolute: invalid`,
				`pod default/web-0: volume config: file "a/../../b": path contains "..": invalid`,
				`pod default/web-0: volume config: file "..data": path must not start with "..": invalid`,
				`pod default/web-0: volume config: file "./..x": path must not start with "..": invalid`,
				`pod default/web-0: volume config: file "dir/file" is below file "dir": invalid`,
			},
		},
		{
			name: "modes the wire cannot carry",
			vol:  cmVolume("config", "app-config", []corev1.KeyToPath{{Key: "LOG_LEVEL", Path: "a", Mode: ptr(int32(0))}, {Key: "LOG_LEVEL", Path: "b", Mode: ptr(int32(0o1777))}}, nil, nil),
			errs: []string{
				`pod default/web-0: volume config: file "a": mode 0000: not supported`,
				`pod default/web-0: volume config: file "b": mode 01777: must be between 0 and 0777: invalid`,
			},
		},
		{
			name: "other volume types are refused by name",
			vol:  corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "pg"}}},
			errs: []string{"pod default/web-0: volume data: persistentVolumeClaim volumes: not supported (emptyDir, hostPath, configMap, secret, downwardAPI and projected are)"},
		},
		{
			name: "a volume without a source",
			vol:  corev1.Volume{Name: "nothing"},
			errs: []string{"pod default/web-0: volume nothing: no volume source is set: invalid"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := oneContainer(corev1.Container{}, tc.vol)
			res, err := Pod(testInput(spec))
			got := errorLines(err)
			if len(got) != len(tc.errs) {
				t.Errorf("got %d errors, want %d:\n%s", len(got), len(tc.errs), strings.Join(got, "\n"))
			}
			for i := range min(len(got), len(tc.errs)) {
				if got[i] != tc.errs[i] {
					t.Errorf("error %d:\n got %s\nwant %s", i, got[i], tc.errs[i])
				}
			}
			if err != nil {
				checkNoSecret(t, "error", err.Error())
				return
			}
			if len(res.Pod.Spec.Volumes) != 1 || res.Pod.Spec.Volumes[0].Files == nil {
				t.Fatalf("want one files volume, got %d volumes", len(res.Pod.Spec.Volumes))
			}
			v := res.Pod.Spec.Volumes[0]
			if v.Name != tc.vol.Name {
				t.Errorf("volume name %q, want %q", v.Name, tc.vol.Name)
			}
			if got := fileSummary(v.Files); got != tc.files {
				t.Errorf("files:\n%s\nwant:\n%s", got, tc.files)
			}
			for p, want := range tc.content {
				found := false
				for _, f := range v.Files.Files {
					if f.Path == p {
						found = true
						if string(f.Content) != want {
							t.Errorf("file %s: content differs (not printed)", p)
						}
					}
				}
				if !found {
					t.Errorf("file %s is missing", p)
				}
			}
		})
	}
}

func TestVolumesPassThrough(t *testing.T) {
	dir := corev1.HostPathDirectory
	spec := oneContainer(corev1.Container{},
		corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse("64Mi"))}}},
		corev1.Volume{Name: "logs", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log", Type: &dir}}},
		cmVolume("config", "app-config", []corev1.KeyToPath{{Key: "LOG_LEVEL", Path: "level"}}, nil, nil),
	)
	res := mustResolve(t, testInput(spec))
	vs := res.Pod.Spec.Volumes
	if len(vs) != 3 || vs[0].Name != "scratch" || vs[1].Name != "logs" || vs[2].Name != "config" {
		t.Fatalf("volumes out of order or missing: %d", len(vs))
	}
	if vs[0].EmptyDir == nil || vs[0].EmptyDir.Medium != corev1.StorageMediumMemory || vs[0].EmptyDir.SizeLimit.String() != "64Mi" || vs[0].HostPath != nil || vs[0].Files != nil {
		t.Errorf("emptyDir not passed through: %+v", vs[0])
	}
	if vs[1].HostPath == nil || vs[1].HostPath.Path != "/var/log" || *vs[1].HostPath.Type != dir || vs[1].EmptyDir != nil {
		t.Errorf("hostPath not passed through: %+v", vs[1])
	}
	// A copy, not the input's.
	vs[1].HostPath.Path = "/changed"
	if spec.Volumes[1].HostPath.Path != "/var/log" {
		t.Error("the result shares the input's hostPath")
	}
}

// TestVolumesAllErrors: every problem of a pod is reported, not only the
// first.
func TestVolumesAllErrors(t *testing.T) {
	spec := oneContainer(corev1.Container{Env: []corev1.EnvVar{{Name: "A", ValueFrom: cmKey("nope", "k", nil)}}},
		cmVolume("a", "nope", nil, nil, nil),
		secretVolume("b", "nope", nil, nil, nil),
		corev1.Volume{Name: "c", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "x", Path: "/"}}},
	)
	_, err := Pod(testInput(spec))
	if got := errorLines(err); len(got) != 4 {
		t.Errorf("got %d errors, want 4:\n%s", len(got), strings.Join(got, "\n"))
	}
	if !errors.Is(err, ErrMissingReference) || !errors.Is(err, ErrNotSupported) {
		t.Error("sentinels are lost in the joined error")
	}
}
