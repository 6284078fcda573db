package resolve

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/render"
)

// templateOf returns a workload's pod template, or nil.
func templateOf(obj any) *corev1.PodTemplateSpec {
	switch v := obj.(type) {
	case *appsv1.Deployment:
		return &v.Spec.Template
	case *appsv1.StatefulSet:
		return &v.Spec.Template
	case *appsv1.DaemonSet:
		return &v.Spec.Template
	case *batchv1.Job:
		return &v.Spec.Template
	case *batchv1.CronJob:
		return &v.Spec.JobTemplate.Spec.Template
	}
	return nil
}

func TestPullSecrets(t *testing.T) {
	s := testSources()
	s.AddSecret(&corev1.Secret{ObjectMeta: meta("broken"), Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte("not json " + secretToken)}})
	spec := oneContainer(corev1.Container{})
	spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}, {Name: ""}, {Name: "legacycred"}, {Name: "nope"}, {Name: "db-creds"}, {Name: "broken"}}
	in := testInput(spec)
	in.Sources = s
	res := mustResolve(t, in)

	got := res.Pod.Spec.ImagePullSecrets
	if len(got) != 2 {
		t.Fatalf("got %d pull secrets, want 2", len(got))
	}
	var doc struct {
		Auths map[string]struct{ Auth string } `json:"auths"`
	}
	if err := json.Unmarshal(got[0], &doc); err != nil || doc.Auths["registry.example"].Auth != secretToken {
		t.Errorf("regcred: not the Secret's .dockerconfigjson (err %v)", err)
	}
	doc.Auths = nil
	if err := json.Unmarshal(got[1], &doc); err != nil || doc.Auths["old.example"].Auth != secretToken {
		t.Errorf("legacycred: .dockercfg not converted to {\"auths\": ...} (err %v)", err)
	}
	wantWarn := []string{
		"pod default/web-0: imagePullSecrets[3]: secret nope not found; pulls go without its credentials",
		"pod default/web-0: imagePullSecrets[4]: secret db-creds: type Opaque is not kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg; pulls go without its credentials",
		"pod default/web-0: imagePullSecrets[5]: secret broken: key .dockerconfigjson is not a JSON object; pulls go without its credentials",
	}
	if strings.Join(res.Warnings, "\n") != strings.Join(wantWarn, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(res.Warnings, "\n"), strings.Join(wantWarn, "\n"))
	}
	for _, w := range res.Warnings {
		checkNoSecret(t, "warning", w)
	}
	if s := fmt.Sprint(got[0]); s != "[redacted]" {
		t.Errorf("a pull secret prints as %q", s)
	}
}

// TestPodCopiesSpec: everything of the PodSpec that the wire carries is
// copied, and the pod's identity is what the input says.
func TestPodCopiesSpec(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	spec := &corev1.PodSpec{
		InitContainers: []corev1.Container{
			{Name: "init", Image: "example/init:1", Command: []string{"sh", "-c", "true"}},
			{Name: "sidecar", Image: "example/side:1", RestartPolicy: &always},
		},
		Containers: []corev1.Container{{
			Name: "web", Image: "example/web:1", Args: []string{"--port=$(PORT)"}, WorkingDir: "/app",
			Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			Env:             []corev1.EnvVar{{Name: "PORT", Value: "8080"}},
			Resources:       corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}},
			VolumeMounts:    []corev1.VolumeMount{{Name: "scratch", MountPath: "/tmp"}},
			ReadinessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}},
			SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr(true)},
		}},
		Volumes:                       []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		RestartPolicy:                 corev1.RestartPolicyOnFailure,
		TerminationGracePeriodSeconds: ptr(int64(45)),
		ActiveDeadlineSeconds:         ptr(int64(600)),
		SecurityContext:               &corev1.PodSecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(1000)), FSGroup: ptr(int64(2000))},
		Hostname:                      "web-0",
		Subdomain:                     "web",
		HostNetwork:                   true,
		DNSConfig:                     &corev1.PodDNSConfig{Nameservers: []string{"198.18.0.53"}, Searches: []string{"svc.local"}},
		ServiceAccountName:            "web-sa",
		NodeSelector:                  map[string]string{"disk": "ssd"},
	}
	in := testInput(spec)
	res := mustResolve(t, in)
	p := res.Pod
	if p.Namespace != "default" || p.Name != "web-0" || p.UID != "uid-1234" || p.Labels["app"] != "web" || p.Annotations["owner"] != "team-a" {
		t.Errorf("identity: %s uid %s labels %v annotations %v", p.Key(), p.UID, p.Labels, p.Annotations)
	}
	s := p.Spec
	if s.RestartPolicy != corev1.RestartPolicyOnFailure || *s.TerminationGracePeriodSeconds != 45 || *s.ActiveDeadlineSeconds != 600 ||
		!*s.SecurityContext.RunAsNonRoot || *s.SecurityContext.FSGroup != 2000 || s.Hostname != "web-0" || s.Subdomain != "web" ||
		!s.HostNetwork || s.DNSConfig.Nameservers[0] != "198.18.0.53" {
		t.Errorf("pod-level fields not copied: %+v", s)
	}
	if len(s.InitContainers) != 2 || s.InitContainers[1].RestartPolicy == nil || len(s.Containers) != 1 {
		t.Fatalf("containers: %d init, %d app", len(s.InitContainers), len(s.Containers))
	}
	want := spec.Containers[0].DeepCopy()
	if !equalJSON(t, want, &s.Containers[0]) {
		t.Errorf("a container with only literal env changed on the way:\n got %+v\nwant %+v", s.Containers[0], *want)
	}
	// Copies, not the input's.
	*s.TerminationGracePeriodSeconds = 1
	s.SecurityContext.FSGroup = nil
	s.Containers[0].Args[0] = "changed"
	if *spec.TerminationGracePeriodSeconds != 45 || spec.SecurityContext.FSGroup == nil || spec.Containers[0].Args[0] != "--port=$(PORT)" {
		t.Error("the result shares memory with the input")
	}
}

func TestPodNamespaceDefault(t *testing.T) {
	in := testInput(oneContainer(corev1.Container{Env: []corev1.EnvVar{{Name: "NS", ValueFrom: field("metadata.namespace")}, {Name: "L", ValueFrom: cmKey("app-config", "LOG_LEVEL", nil)}}}))
	in.Namespace = ""
	res := mustResolve(t, in)
	if res.Pod.Namespace != "default" {
		t.Errorf("namespace %q, want default", res.Pod.Namespace)
	}
	env := agentEnv(res.Pod.Spec.Containers[0].Env, nil)
	if env["NS"] != "default" || env["L"] != "info" {
		t.Errorf("env %v", env)
	}
}

func TestPodNilSpec(t *testing.T) {
	in := testInput(nil)
	_, err := Pod(in)
	if err == nil || err.Error() != "pod default/web-0: spec is missing: invalid" {
		t.Errorf("err = %v", err)
	}
}

// TestNoSecretInOutput: no Secret value appears in any error, warning, or
// the fmt or slog output of a result, sources, or a pull secret, whatever
// fails.
func TestNoSecretInOutput(t *testing.T) {
	s := testSources()
	s.AddSecret(&corev1.Secret{ObjectMeta: meta("more"), Data: map[string][]byte{"bad key": []byte(secretTLSKey), "GOOD": []byte(secretToken)}})
	spec := oneContainer(corev1.Container{
		EnvFrom: []corev1.EnvFromSource{fromSecret("db-creds", "bad=", nil), fromSecret("more", "", nil)},
		Env: []corev1.EnvVar{
			{Name: "PW", ValueFrom: secretKey("db-creds", "password", nil)},
			{Name: "X", ValueFrom: secretKey("db-creds", "nope", nil)},
			{Name: "Y", Value: "$(PW)$(X)"},
		},
	},
		secretVolume("creds", "db-creds", []corev1.KeyToPath{{Key: "password", Path: "../pw"}, {Key: "username", Path: "u", Mode: ptr(int32(0))}}, nil, nil),
		secretVolume("tls", "tls", nil, nil, nil),
	)
	spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "db-creds"}, {Name: "regcred"}, {Name: "tls"}}
	in := testInput(spec)
	in.Sources = s
	res, err := Pod(in)
	if err == nil {
		t.Fatal("want errors")
	}
	checkNoSecret(t, "error", err.Error())
	for _, w := range res.Warnings {
		checkNoSecret(t, "warning", w)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		checkNoSecret(t, "Result "+format, fmt.Sprintf(format, res))
		checkNoSecret(t, "Sources "+format, fmt.Sprintf(format, s))
		checkNoSecret(t, "Input "+format, fmt.Sprintf(format, in))
		checkNoSecret(t, "pull secrets "+format, fmt.Sprintf(format, res.Pod.Spec.ImagePullSecrets))
		checkNoSecret(t, "secret "+format, fmt.Sprintf(format, s.secret("default", "db-creds")))
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("resolved", "result", res, "sources", s, "pull", res.Pod.Spec.ImagePullSecrets[0])
	checkNoSecret(t, "slog", b.String())
}

// TestSeed resolves every Pod and workload template of the seed
// repository against its own ConfigMaps and Secrets.
func TestSeed(t *testing.T) {
	d, err := render.Load(context.Background(), os.DirFS("../../examples/seed"), render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src := SourcesOf(d)
	m := Machine{Name: "node1", Addresses: []string{"198.18.0.11"}, Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")}}
	n := 0
	for _, o := range d.Objects {
		var tmpl *corev1.PodTemplateSpec
		switch v := o.Obj.(type) {
		case *corev1.Pod:
			tmpl = &corev1.PodTemplateSpec{ObjectMeta: v.ObjectMeta, Spec: v.Spec}
		default:
			tmpl = templateOf(o.Obj)
		}
		if tmpl == nil {
			continue
		}
		n++
		res, err := Pod(&Input{Namespace: o.Namespace, Name: o.Name, UID: "u-" + o.Name, Labels: tmpl.Labels, Annotations: tmpl.Annotations, Spec: &tmpl.Spec, Machine: m, Sources: src})
		if err != nil {
			t.Errorf("%s: %v", o.Ref(), err)
			continue
		}
		if res.Pod.Hash == "" || len(res.Pod.Spec.Containers) != len(tmpl.Spec.Containers) {
			t.Errorf("%s: hash %q, %d containers", o.Ref(), res.Pod.Hash, len(res.Pod.Spec.Containers))
		}
		checkNoSecret(t, o.Ref(), fmt.Sprintf("%v %v", res, res.Warnings))
	}
	if n < 10 {
		t.Errorf("only %d pods in the seed", n)
	}

	// The ConfigMap consumer: envFrom, configMapKeyRef and an item.
	cm := d.Get(render.Key{Kind: "Pod", Namespace: "default", Name: "app-config-consumer"}).Obj.(*corev1.Pod)
	res, err := Pod(&Input{Namespace: "default", Name: cm.Name, UID: "u", Labels: cm.Labels, Spec: &cm.Spec, Machine: m, Sources: src})
	if err != nil {
		t.Fatal(err)
	}
	env := agentEnv(res.Pod.Spec.Containers[0].Env, nil)
	if env["DB_HOST"] != "postgres.production.svc.cluster.local" || env["DATABASE_PORT"] != "5432" || env["LOG_LEVEL"] != "info" {
		t.Errorf("app-config-consumer env: %v", env)
	}
	f := res.Pod.Spec.Volumes[0].Files
	if f == nil || len(f.Files) != 1 || f.Files[0].Path != "default.conf" || !strings.Contains(string(f.Files[0].Content), "proxy_pass http://backend:8080;") {
		t.Errorf("app-config-consumer volume: %+v", res.Pod.Spec.Volumes)
	}

	// nginx-pod's DB_PASSWORD comes from db-secret (base64 data).
	ng := d.Get(render.Key{Kind: "Pod", Namespace: "default", Name: "nginx-pod"}).Obj.(*corev1.Pod)
	res, err = Pod(&Input{Namespace: "default", Name: ng.Name, UID: "u", Spec: &ng.Spec, Machine: m, Sources: src})
	if err != nil {
		t.Fatal(err)
	}
	if got := agentEnv(res.Pod.Spec.Containers[0].Env, nil)["DB_PASSWORD"]; got != "S3cr3tP@ss" {
		t.Error("nginx-pod: DB_PASSWORD is not db-secret's password")
	}
}

// dnsPolicy reaches the agent, except the default ClusterFirst (omitted).
func TestPodDNSPolicy(t *testing.T) {
	for policy, want := range map[corev1.DNSPolicy]corev1.DNSPolicy{
		corev1.DNSClusterFirst:            "",
		corev1.DNSDefault:                 corev1.DNSDefault,
		corev1.DNSNone:                    corev1.DNSNone,
		corev1.DNSClusterFirstWithHostNet: corev1.DNSClusterFirstWithHostNet,
	} {
		spec := oneContainer(corev1.Container{Name: "c", Image: "example/c:1"})
		spec.DNSPolicy = policy
		res, err := Pod(testInput(spec))
		if err != nil {
			t.Fatal(err)
		}
		if res.Pod.Spec.DNSPolicy != want {
			t.Errorf("dnsPolicy %s reached the agent as %q, want %q", policy, res.Pod.Spec.DNSPolicy, want)
		}
	}
}
