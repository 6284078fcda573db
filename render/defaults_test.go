package render

import (
	"context"
	"math"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/render/api/v1alpha1"
)

// Defaulted building blocks, as the API server returns them.

func defaultedPodSpec(containers ...corev1.Container) corev1.PodSpec {
	return corev1.PodSpec{
		Containers:                    containers,
		RestartPolicy:                 corev1.RestartPolicyAlways,
		DNSPolicy:                     corev1.DNSClusterFirst,
		SchedulerName:                 corev1.DefaultSchedulerName,
		TerminationGracePeriodSeconds: ptrTo(int64(30)),
		SecurityContext:               &corev1.PodSecurityContext{},
	}
}

func defaultedContainer(name, image string, pull corev1.PullPolicy) corev1.Container {
	return corev1.Container{
		Name:                     name,
		Image:                    image,
		ImagePullPolicy:          pull,
		TerminationMessagePath:   "/dev/termination-log",
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
}

func defaultedProbe(h corev1.ProbeHandler) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: h, TimeoutSeconds: 1, PeriodSeconds: 10, SuccessThreshold: 1, FailureThreshold: 3}
}

func tmpl(spec corev1.PodSpec) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}}, Spec: spec}
}

var appSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}

func TestApplyDefaults(t *testing.T) {
	app := corev1.Container{Name: "app", Image: "app:1"}
	appDefaulted := defaultedContainer("app", "app:1", corev1.PullIfNotPresent)
	gi := resource.MustParse("1Gi")
	cpu := resource.MustParse("500m")

	tests := []struct {
		name     string
		kind     string
		in, want any
	}{
		{
			name: "pod",
			kind: "Pod",
			in: &corev1.Pod{Spec: corev1.PodSpec{
				Containers: []corev1.Container{{
					Name: "app", Image: "app",
					Ports: []corev1.ContainerPort{{ContainerPort: 80}},
					Env: []corev1.EnvVar{{Name: "NODE", ValueFrom: &corev1.EnvVarSource{
						FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"},
					}}},
					Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"memory": gi}},
					LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
						HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(80)},
					}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:   corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9000}},
						TimeoutSeconds: 5, PeriodSeconds: 2, SuccessThreshold: 2, FailureThreshold: 10,
					},
					Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
						HTTPGet: &corev1.HTTPGetAction{Path: "/stop", Port: intstr.FromInt32(80)},
					}},
				}},
				InitContainers: []corev1.Container{{Name: "init", Image: "init:latest",
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{"cpu": cpu},
						Limits:   corev1.ResourceList{"cpu": resource.MustParse("1"), "memory": gi},
					},
				}},
			}},
			want: &corev1.Pod{Spec: func() corev1.PodSpec {
				c := defaultedContainer("app", "app", corev1.PullAlways)
				c.Ports = []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolTCP}}
				c.Env = []corev1.EnvVar{{Name: "NODE", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.nodeName"},
				}}}
				c.Resources = corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{"memory": gi},
					Requests: corev1.ResourceList{"memory": gi},
				}
				c.LivenessProbe = defaultedProbe(corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(80), Scheme: corev1.URISchemeHTTP},
				})
				c.ReadinessProbe = &corev1.Probe{
					ProbeHandler:   corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9000, Service: ptrTo("")}},
					TimeoutSeconds: 5, PeriodSeconds: 2, SuccessThreshold: 2, FailureThreshold: 10,
				}
				c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/stop", Port: intstr.FromInt32(80), Scheme: corev1.URISchemeHTTP},
				}}
				s := defaultedPodSpec(c)
				ic := defaultedContainer("init", "init:latest", corev1.PullAlways)
				ic.Resources = corev1.ResourceRequirements{
					Requests: corev1.ResourceList{"cpu": cpu, "memory": gi},
					Limits:   corev1.ResourceList{"cpu": resource.MustParse("1"), "memory": gi},
				}
				s.InitContainers = []corev1.Container{ic}
				s.EnableServiceLinks = ptrTo(true)
				return s
			}()},
		},
		{
			name: "pod keeps what is set",
			kind: "Pod",
			in: &corev1.Pod{Spec: corev1.PodSpec{
				Containers:                    []corev1.Container{{Name: "app", Image: "app:latest", ImagePullPolicy: corev1.PullNever, TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError}},
				RestartPolicy:                 corev1.RestartPolicyNever,
				DNSPolicy:                     corev1.DNSDefault,
				SchedulerName:                 "other",
				TerminationGracePeriodSeconds: ptrTo(int64(0)),
				SecurityContext:               &corev1.PodSecurityContext{RunAsNonRoot: ptrTo(true)},
				EnableServiceLinks:            ptrTo(false),
			}},
			want: &corev1.Pod{Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "app", Image: "app:latest", ImagePullPolicy: corev1.PullNever,
					TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError}},
				RestartPolicy:                 corev1.RestartPolicyNever,
				DNSPolicy:                     corev1.DNSDefault,
				SchedulerName:                 "other",
				TerminationGracePeriodSeconds: ptrTo(int64(0)),
				SecurityContext:               &corev1.PodSecurityContext{RunAsNonRoot: ptrTo(true)},
				EnableServiceLinks:            ptrTo(false),
			}},
		},
		{
			name: "pod on the host network",
			kind: "Pod",
			in: &corev1.Pod{Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{
				Name: "app", Image: "app:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080, Protocol: corev1.ProtocolUDP}},
			}}}},
			want: &corev1.Pod{Spec: func() corev1.PodSpec {
				c := appDefaulted
				c.Ports = []corev1.ContainerPort{{ContainerPort: 8080, HostPort: 8080, Protocol: corev1.ProtocolUDP}}
				s := defaultedPodSpec(c)
				s.HostNetwork = true
				s.EnableServiceLinks = ptrTo(true)
				return s
			}()},
		},
		{
			name: "volumes",
			kind: "Pod",
			in: &corev1.Pod{Spec: corev1.PodSpec{
				Containers: []corev1.Container{app},
				Volumes: []corev1.Volume{
					{Name: "scratch"},
					{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}}},
					{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s", DefaultMode: ptrTo(int32(0o400))}}},
					{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log"}}},
					{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
						{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
					}}}},
					{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
						{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
					}}}},
					{Name: "eph", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{}}}},
					{Name: "img", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "data@sha256:abc"}}},
				},
			}},
			want: &corev1.Pod{Spec: func() corev1.PodSpec {
				s := defaultedPodSpec(appDefaulted)
				s.EnableServiceLinks = ptrTo(true)
				s.Volumes = []corev1.Volume{
					{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}, DefaultMode: ptrTo(int32(0o644))}}},
					{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s", DefaultMode: ptrTo(int32(0o400))}}},
					{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log", Type: ptrTo(corev1.HostPathUnset)}}},
					{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{DefaultMode: ptrTo(int32(0o644)), Items: []corev1.DownwardAPIVolumeFile{
						{Path: "name", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}},
					}}}},
					{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: ptrTo(int32(0o644)), Sources: []corev1.VolumeProjection{
						{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptrTo(int64(3600))}},
					}}}},
					{Name: "eph", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
						Spec: corev1.PersistentVolumeClaimSpec{VolumeMode: ptrTo(corev1.PersistentVolumeFilesystem)},
					}}}},
					{Name: "img", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "data@sha256:abc", PullPolicy: corev1.PullIfNotPresent}}},
				}
				return s
			}()},
		},
		{
			name: "deployment",
			kind: "Deployment",
			in: &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
				Selector: appSelector,
				Template: tmpl(corev1.PodSpec{Containers: []corev1.Container{app}}),
			}},
			want: &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
				Replicas: ptrTo(int32(1)),
				Selector: appSelector,
				Template: tmpl(defaultedPodSpec(appDefaulted)),
				Strategy: appsv1.DeploymentStrategy{
					Type: appsv1.RollingUpdateDeploymentStrategyType,
					RollingUpdate: &appsv1.RollingUpdateDeployment{
						MaxUnavailable: ptrTo(intstr.FromString("25%")),
						MaxSurge:       ptrTo(intstr.FromString("25%")),
					},
				},
				RevisionHistoryLimit:    ptrTo(int32(10)),
				ProgressDeadlineSeconds: ptrTo(int32(600)),
			}},
		},
		{
			name: "deployment recreate",
			kind: "Deployment",
			in: &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
				Replicas: ptrTo(int32(0)),
				Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
				Template: tmpl(corev1.PodSpec{Containers: []corev1.Container{app}}),
			}},
			want: &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
				Replicas:                ptrTo(int32(0)),
				Strategy:                appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
				Template:                tmpl(defaultedPodSpec(appDefaulted)),
				RevisionHistoryLimit:    ptrTo(int32(10)),
				ProgressDeadlineSeconds: ptrTo(int32(600)),
			}},
		},
		{
			name: "statefulset",
			kind: "StatefulSet",
			in: &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{
				Template: tmpl(corev1.PodSpec{Containers: []corev1.Container{app}}),
				VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
					ObjectMeta: metav1.ObjectMeta{Name: "data"},
				}},
			}},
			want: &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{
				Replicas:            ptrTo(int32(1)),
				PodManagementPolicy: appsv1.OrderedReadyPodManagement,
				UpdateStrategy: appsv1.StatefulSetUpdateStrategy{
					Type:          appsv1.RollingUpdateStatefulSetStrategyType,
					RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptrTo(int32(0))},
				},
				PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
					WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
					WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
				},
				RevisionHistoryLimit: ptrTo(int32(10)),
				Template:             tmpl(defaultedPodSpec(appDefaulted)),
				VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
					ObjectMeta: metav1.ObjectMeta{Name: "data"},
					Spec:       corev1.PersistentVolumeClaimSpec{VolumeMode: ptrTo(corev1.PersistentVolumeFilesystem)},
				}},
			}},
		},
		{
			name: "statefulset on delete",
			kind: "StatefulSet",
			in: &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{
				UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
				PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
					WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType,
				},
				Template: tmpl(corev1.PodSpec{Containers: []corev1.Container{app}}),
			}},
			want: &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{
				Replicas:            ptrTo(int32(1)),
				PodManagementPolicy: appsv1.OrderedReadyPodManagement,
				UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
				PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
					WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType,
					WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
				},
				RevisionHistoryLimit: ptrTo(int32(10)),
				Template:             tmpl(defaultedPodSpec(appDefaulted)),
			}},
		},
		{
			name: "daemonset",
			kind: "DaemonSet",
			in: &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{
				Template: tmpl(corev1.PodSpec{Containers: []corev1.Container{app}}),
			}},
			want: &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{
				Template: tmpl(defaultedPodSpec(appDefaulted)),
				UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
					Type: appsv1.RollingUpdateDaemonSetStrategyType,
					RollingUpdate: &appsv1.RollingUpdateDaemonSet{
						MaxUnavailable: ptrTo(intstr.FromInt32(1)),
						MaxSurge:       ptrTo(intstr.FromInt32(0)),
					},
				},
				RevisionHistoryLimit: ptrTo(int32(10)),
			}},
		},
		{
			name: "job",
			kind: "Job",
			in: &batchv1.Job{Spec: batchv1.JobSpec{
				Template: tmpl(corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{app}}),
			}},
			want: &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}},
				Spec: batchv1.JobSpec{
					Completions:          ptrTo(int32(1)),
					Parallelism:          ptrTo(int32(1)),
					BackoffLimit:         ptrTo(int32(6)),
					CompletionMode:       ptrTo(batchv1.NonIndexedCompletion),
					Suspend:              ptrTo(false),
					PodReplacementPolicy: ptrTo(batchv1.TerminatingOrFailed),
					Template: func() corev1.PodTemplateSpec {
						s := defaultedPodSpec(appDefaulted)
						s.RestartPolicy = corev1.RestartPolicyNever
						return tmpl(s)
					}(),
				},
			},
		},
		{
			name: "parallel job with a failure policy",
			kind: "Job",
			in: &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"team": "data"}},
				Spec: batchv1.JobSpec{
					Parallelism:          ptrTo(int32(4)),
					BackoffLimitPerIndex: ptrTo(int32(2)),
					CompletionMode:       ptrTo(batchv1.IndexedCompletion),
					PodFailurePolicy:     &batchv1.PodFailurePolicy{},
					Template:             tmpl(corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{app}}),
				},
			},
			want: &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"team": "data"}},
				Spec: batchv1.JobSpec{
					Parallelism:          ptrTo(int32(4)),
					BackoffLimit:         ptrTo(int32(math.MaxInt32)),
					BackoffLimitPerIndex: ptrTo(int32(2)),
					CompletionMode:       ptrTo(batchv1.IndexedCompletion),
					Suspend:              ptrTo(false),
					PodFailurePolicy:     &batchv1.PodFailurePolicy{},
					PodReplacementPolicy: ptrTo(batchv1.Failed),
					Template: func() corev1.PodTemplateSpec {
						s := defaultedPodSpec(appDefaulted)
						s.RestartPolicy = corev1.RestartPolicyNever
						return tmpl(s)
					}(),
				},
			},
		},
		{
			name: "cronjob",
			kind: "CronJob",
			in: &batchv1.CronJob{Spec: batchv1.CronJobSpec{
				Schedule: "@daily",
				JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
					Template: tmpl(corev1.PodSpec{RestartPolicy: corev1.RestartPolicyOnFailure, Containers: []corev1.Container{app}}),
				}},
			}},
			want: &batchv1.CronJob{Spec: batchv1.CronJobSpec{
				Schedule:                   "@daily",
				ConcurrencyPolicy:          batchv1.AllowConcurrent,
				Suspend:                    ptrTo(false),
				SuccessfulJobsHistoryLimit: ptrTo(int32(3)),
				FailedJobsHistoryLimit:     ptrTo(int32(1)),
				// The job template's JobSpec stays as written.
				JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
					Template: func() corev1.PodTemplateSpec {
						s := defaultedPodSpec(appDefaulted)
						s.RestartPolicy = corev1.RestartPolicyOnFailure
						return tmpl(s)
					}(),
				}},
			}},
		},
		{
			name: "service",
			kind: "Service",
			in: &corev1.Service{Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "x"},
				Ports: []corev1.ServicePort{
					{Name: "http", Port: 80},
					{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString("dns")},
				},
			}},
			want: &corev1.Service{Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeClusterIP,
				Selector: map[string]string{"app": "x"},
				Ports: []corev1.ServicePort{
					{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(80)},
					{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString("dns")},
				},
				SessionAffinity:       corev1.ServiceAffinityNone,
				InternalTrafficPolicy: ptrTo(corev1.ServiceInternalTrafficPolicyCluster),
				IPFamilyPolicy:        ptrTo(corev1.IPFamilyPolicySingleStack),
			}},
		},
		{
			name: "load balancer with client IP affinity",
			kind: "Service",
			in: &corev1.Service{Spec: corev1.ServiceSpec{
				Type:            corev1.ServiceTypeLoadBalancer,
				SessionAffinity: corev1.ServiceAffinityClientIP,
				Ports:           []corev1.ServicePort{{Port: 443, NodePort: 30443}},
			}},
			want: &corev1.Service{Spec: corev1.ServiceSpec{
				Type:            corev1.ServiceTypeLoadBalancer,
				SessionAffinity: corev1.ServiceAffinityClientIP,
				SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{
					TimeoutSeconds: ptrTo(int32(10800)),
				}},
				Ports:                         []corev1.ServicePort{{Port: 443, NodePort: 30443, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(443)}},
				ExternalTrafficPolicy:         corev1.ServiceExternalTrafficPolicyCluster,
				InternalTrafficPolicy:         ptrTo(corev1.ServiceInternalTrafficPolicyCluster),
				AllocateLoadBalancerNodePorts: ptrTo(true),
				IPFamilyPolicy:                ptrTo(corev1.IPFamilyPolicySingleStack),
			}},
		},
		{
			name: "headless service without selector",
			kind: "Service",
			in:   &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "None"}},
			want: &corev1.Service{Spec: corev1.ServiceSpec{
				Type:                  corev1.ServiceTypeClusterIP,
				ClusterIP:             "None",
				SessionAffinity:       corev1.ServiceAffinityNone,
				InternalTrafficPolicy: ptrTo(corev1.ServiceInternalTrafficPolicyCluster),
				IPFamilyPolicy:        ptrTo(corev1.IPFamilyPolicyRequireDualStack),
			}},
		},
		{
			name: "external name service",
			kind: "Service",
			in:   &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com"}},
			want: &corev1.Service{Spec: corev1.ServiceSpec{
				Type:            corev1.ServiceTypeExternalName,
				ExternalName:    "db.example.com",
				SessionAffinity: corev1.ServiceAffinityNone,
			}},
		},
		{
			name: "secret",
			kind: "Secret",
			in:   &corev1.Secret{StringData: map[string]string{"a": "b"}},
			want: &corev1.Secret{Type: corev1.SecretTypeOpaque, StringData: map[string]string{"a": "b"}},
		},
		{
			name: "secret of a type",
			kind: "Secret",
			in:   &corev1.Secret{Type: corev1.SecretTypeTLS},
			want: &corev1.Secret{Type: corev1.SecretTypeTLS},
		},
		{
			name: "namespace",
			kind: "Namespace",
			in:   &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
			want: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"kubernetes.io/metadata.name": "shop"}}},
		},
		{
			name: "pvc",
			kind: "PersistentVolumeClaim",
			in:   &corev1.PersistentVolumeClaim{},
			want: &corev1.PersistentVolumeClaim{Spec: corev1.PersistentVolumeClaimSpec{VolumeMode: ptrTo(corev1.PersistentVolumeFilesystem)}},
		},
		{
			name: "storageclass",
			kind: "StorageClass",
			in:   &storagev1.StorageClass{Provisioner: "p"},
			want: &storagev1.StorageClass{
				Provisioner:       "p",
				ReclaimPolicy:     ptrTo(corev1.PersistentVolumeReclaimDelete),
				VolumeBindingMode: ptrTo(storagev1.VolumeBindingImmediate),
			},
		},
		{
			name: "hpa",
			kind: "HorizontalPodAutoscaler",
			in:   &autoscalingv2.HorizontalPodAutoscaler{Spec: autoscalingv2.HorizontalPodAutoscalerSpec{MaxReplicas: 5}},
			want: &autoscalingv2.HorizontalPodAutoscaler{Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
				MinReplicas: ptrTo(int32(1)),
				MaxReplicas: 5,
				Metrics: []autoscalingv2.MetricSpec{{
					Type: autoscalingv2.ResourceMetricSourceType,
					Resource: &autoscalingv2.ResourceMetricSource{
						Name:   corev1.ResourceCPU,
						Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptrTo(int32(80))},
					},
				}},
			}},
		},
		{
			name: "hpa with a partial behavior",
			kind: "HorizontalPodAutoscaler",
			in: &autoscalingv2.HorizontalPodAutoscaler{Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
				MinReplicas: ptrTo(int32(2)),
				MaxReplicas: 5,
				Metrics:     []autoscalingv2.MetricSpec{{Type: autoscalingv2.PodsMetricSourceType}},
				Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
					ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptrTo(int32(300))},
				},
			}},
			want: &autoscalingv2.HorizontalPodAutoscaler{Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
				MinReplicas: ptrTo(int32(2)),
				MaxReplicas: 5,
				Metrics:     []autoscalingv2.MetricSpec{{Type: autoscalingv2.PodsMetricSourceType}},
				Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
					ScaleUp: &autoscalingv2.HPAScalingRules{
						StabilizationWindowSeconds: ptrTo(int32(0)),
						SelectPolicy:               ptrTo(autoscalingv2.MaxChangePolicySelect),
						Policies: []autoscalingv2.HPAScalingPolicy{
							{Type: autoscalingv2.PodsScalingPolicy, Value: 4, PeriodSeconds: 15},
							{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 15},
						},
					},
					ScaleDown: &autoscalingv2.HPAScalingRules{
						StabilizationWindowSeconds: ptrTo(int32(300)),
						SelectPolicy:               ptrTo(autoscalingv2.MaxChangePolicySelect),
						Policies: []autoscalingv2.HPAScalingPolicy{
							{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 15},
						},
					},
				},
			}},
		},
		{
			name: "networkpolicy with egress",
			kind: "NetworkPolicy",
			in: &networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: ptrTo(intstr.FromInt32(80))}}}},
				Egress:  []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: ptrTo(intstr.FromInt32(53)), Protocol: ptrTo(corev1.ProtocolUDP)}}}},
			}},
			want: &networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
				Ingress:     []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: ptrTo(intstr.FromInt32(80)), Protocol: ptrTo(corev1.ProtocolTCP)}}}},
				Egress:      []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: ptrTo(intstr.FromInt32(53)), Protocol: ptrTo(corev1.ProtocolUDP)}}}},
			}},
		},
		{
			name: "networkpolicy ingress only",
			kind: "NetworkPolicy",
			in:   &networkingv1.NetworkPolicy{},
			want: &networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			}},
		},
		{
			name: "networkpolicy keeps its types",
			kind: "NetworkPolicy",
			in: &networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			}},
			want: &networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			}},
		},
		{
			name: "rolebinding",
			kind: "RoleBinding",
			in: &rbacv1.RoleBinding{
				RoleRef:  rbacv1.RoleRef{Kind: "Role", Name: "r"},
				Subjects: []rbacv1.Subject{{Kind: "User", Name: "u"}, {Kind: "ServiceAccount", Name: "s"}},
			},
			want: &rbacv1.RoleBinding{
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "r"},
				Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: rbacv1.GroupName, Name: "u"}, {Kind: "ServiceAccount", Name: "s"}},
			},
		},
		{
			name: "machine",
			kind: "Machine",
			in:   &v1alpha1.Machine{Spec: v1alpha1.MachineSpec{Address: "198.18.0.11"}},
			want: &v1alpha1.Machine{Spec: v1alpha1.MachineSpec{
				Address: "198.18.0.11",
				SSH:     v1alpha1.SSHSpec{User: "root", Port: 22},
				Agent: v1alpha1.AgentSpec{
					StateDir:          v1alpha1.DefaultStateDir,
					Socket:            v1alpha1.DefaultSocket,
					LogDir:            v1alpha1.DefaultLogDir,
					ContainerdAddress: v1alpha1.DefaultContainerd,
					Namespace:         v1alpha1.DefaultNamespace,
					BinaryPath:        v1alpha1.DefaultBinaryPath,
				},
			}},
		},
		{
			name: "machine keeps its settings",
			kind: "Machine",
			in: &v1alpha1.Machine{Spec: v1alpha1.MachineSpec{
				Address: "node1",
				SSH:     v1alpha1.SSHSpec{User: "admin", Port: 2222},
				Agent:   v1alpha1.AgentSpec{StateDir: "/srv/berth"},
			}},
			want: &v1alpha1.Machine{Spec: v1alpha1.MachineSpec{
				Address: "node1",
				SSH:     v1alpha1.SSHSpec{User: "admin", Port: 2222},
				Agent: v1alpha1.AgentSpec{
					StateDir:          "/srv/berth",
					Socket:            v1alpha1.DefaultSocket,
					LogDir:            v1alpha1.DefaultLogDir,
					ContainerdAddress: v1alpha1.DefaultContainerd,
					Namespace:         v1alpha1.DefaultNamespace,
					BinaryPath:        v1alpha1.DefaultBinaryPath,
				},
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := &Object{Kind: tc.kind, Obj: tc.in}
			applyDefaults(o)
			if diff := cmp.Diff(tc.want, o.Obj); diff != "" {
				t.Errorf("defaults differ (-want +got):\n%s", diff)
			}
			// Defaulting twice changes nothing more.
			applyDefaults(o)
			if diff := cmp.Diff(tc.want, o.Obj); diff != "" {
				t.Errorf("defaulting again changed the object (-want +got):\n%s", diff)
			}
		})
	}
}

func TestImageTag(t *testing.T) {
	for _, tc := range []struct {
		image, tag string
		pull       corev1.PullPolicy
	}{
		{"nginx", "latest", corev1.PullAlways},
		{"nginx:latest", "latest", corev1.PullAlways},
		{"nginx:1.27", "1.27", corev1.PullIfNotPresent},
		{"registry.example:5000/team/app", "latest", corev1.PullAlways},
		{"registry.example:5000/team/app:v2", "v2", corev1.PullIfNotPresent},
		{"app@sha256:abcd", "", corev1.PullIfNotPresent},
		{"registry.example:5000/app@sha256:abcd", "", corev1.PullIfNotPresent},
		{"app:latest@sha256:abcd", "latest", corev1.PullAlways},
		{"app:1@sha256:abcd", "1", corev1.PullIfNotPresent},
	} {
		if got := imageTag(tc.image); got != tc.tag {
			t.Errorf("imageTag(%q) = %q, want %q", tc.image, got, tc.tag)
		}
		if got := defaultPullPolicy(tc.image); got != tc.pull {
			t.Errorf("defaultPullPolicy(%q) = %s, want %s", tc.image, got, tc.pull)
		}
	}
}

// TestDefaultsThroughLoad checks defaults as Load applies them: set values
// are kept, and defaulted fields have no source position.
func TestDefaultsThroughLoad(t *testing.T) {
	fsys := fstest.MapFS{"job.yaml": {Data: []byte(`apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: migrate:1
`)}}
	d, err := Load(context.Background(), fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Diagnostics.Err(); err != nil {
		t.Fatal(err)
	}
	o := d.Get(Key{Group: "batch", Kind: "Job", Namespace: "default", Name: "migrate"})
	if o == nil {
		t.Fatal("job not loaded")
	}
	j := o.Obj.(*batchv1.Job)
	if *j.Spec.BackoffLimit != 0 {
		t.Errorf("backoffLimit = %d, want the 0 that was set", *j.Spec.BackoffLimit)
	}
	if got := j.Spec.Template.Spec.RestartPolicy; got != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy = %s, want Never", got)
	}
	if *j.Spec.Completions != 1 || *j.Spec.Parallelism != 1 {
		t.Errorf("completions, parallelism = %d, %d, want 1, 1", *j.Spec.Completions, *j.Spec.Parallelism)
	}
	if o.HasField("spec.completions") {
		t.Error("a defaulted field has a source position")
	}
	if !o.HasField("spec.backoffLimit") {
		t.Error("a written field has no source position")
	}
}
