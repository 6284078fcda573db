package resolve

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func refLine(r Ref) string {
	s := fmt.Sprintf("%s %s via %s", r.Kind, r.Name, r.Via)
	if r.Container != "" {
		s += " container " + r.Container
		if r.Init {
			s += " (init)"
		}
	}
	if r.Env != "" {
		s += " env " + r.Env
	}
	if r.Volume != "" {
		s += " volume " + r.Volume
	}
	if r.MountPath != "" {
		s += " at " + r.MountPath
	}
	if r.Optional {
		s += " optional"
	}
	if r.InPlace() {
		s += " [in place]"
	}
	return s
}

func refsSpec() *corev1.PodSpec {
	return &corev1.PodSpec{
		InitContainers: []corev1.Container{{
			Name: "migrate", Image: "m",
			Env:          []corev1.EnvVar{{Name: "PW", ValueFrom: secretKey("db-creds", "password", nil)}},
			VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}},
		}},
		Containers: []corev1.Container{
			{
				Name: "web", Image: "w",
				EnvFrom: []corev1.EnvFromSource{fromCM("app-config", "", nil), fromSecret("api-token", "API_", ptr(true))},
				Env: []corev1.EnvVar{
					{Name: "LEVEL", ValueFrom: cmKey("app-config", "LOG_LEVEL", nil)},
					{Name: "LITERAL", Value: "x", ValueFrom: cmKey("ignored", "k", nil)},
					{Name: "NODE", ValueFrom: field("spec.nodeName")},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "config", MountPath: "/etc/app"},
					{Name: "config", MountPath: "/etc/nginx/nginx.conf", SubPath: "nginx.conf"},
					{Name: "all", MountPath: "/var/run/all"},
					{Name: "scratch", MountPath: "/tmp"},
				},
			},
			{
				Name: "side", Image: "s",
				VolumeMounts: []corev1.VolumeMount{{Name: "tls", MountPath: "/tls", SubPathExpr: "$(NODE)"}},
			},
		},
		Volumes: []corev1.Volume{
			cmVolume("config", "app-config", nil, nil, nil),
			secretVolume("tls", "tls", nil, nil, nil),
			{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "overrides"}, Optional: ptr(true)}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "db-creds"}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{}},
			}}}},
			secretVolume("unmounted", "api-token", nil, nil, nil),
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}, {Name: ""}},
	}
}

func TestReferences(t *testing.T) {
	var got []string
	for _, r := range References(refsSpec()) {
		got = append(got, refLine(r))
	}
	want := []string{
		"Secret db-creds via env container migrate (init) env PW",
		"ConfigMap app-config via volume container migrate (init) volume config at /etc/app [in place]",
		"ConfigMap app-config via envFrom container web",
		"Secret api-token via envFrom container web optional",
		"ConfigMap app-config via env container web env LEVEL",
		"ConfigMap app-config via volume container web volume config at /etc/app [in place]",
		"ConfigMap app-config via subPath container web volume config at /etc/nginx/nginx.conf",
		"ConfigMap overrides via volume container web volume all at /var/run/all optional [in place]",
		"Secret db-creds via volume container web volume all at /var/run/all [in place]",
		"Secret tls via subPath container side volume tls at /tls",
		"Secret api-token via volume volume unmounted [in place]",
		"Secret regcred via imagePullSecret",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("References:\n%s\n\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestAffected(t *testing.T) {
	tests := []struct {
		kind           Kind
		name           string
		inPlace, later int
	}{
		{KindConfigMap, "app-config", 2, 3},
		{KindSecret, "db-creds", 1, 1},
		{KindSecret, "tls", 0, 1},
		{KindSecret, "api-token", 1, 1},
		{KindSecret, "regcred", 0, 1},
		{KindConfigMap, "db-creds", 0, 0}, // a Secret of that name is not a ConfigMap
		{KindConfigMap, "ignored", 0, 0},  // a literal value wins over valueFrom
		{KindConfigMap, "unrelated", 0, 0},
	}
	for _, tc := range tests {
		in, later := Affected(refsSpec(), tc.kind, tc.name)
		if len(in) != tc.inPlace || len(later) != tc.later {
			t.Errorf("%s %s: %d in place, %d later; want %d, %d", tc.kind, tc.name, len(in), len(later), tc.inPlace, tc.later)
		}
		for _, r := range in {
			if !r.InPlace() || r.Kind != tc.kind || r.Name != tc.name {
				t.Errorf("%s %s: %s listed as in place", tc.kind, tc.name, refLine(r))
			}
		}
		for _, r := range later {
			if r.InPlace() {
				t.Errorf("%s %s: %s listed as later", tc.kind, tc.name, refLine(r))
			}
		}
	}
}
