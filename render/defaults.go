package render

import (
	"math"
	"reflect"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/render/api/v1alpha1"
)

// defaultCluster fills in the fleet settings a Cluster leaves out.
func defaultCluster(c *v1alpha1.Cluster) {
	c.APIVersion, c.Kind = v1alpha1.APIVersion, "Cluster"
	s := &c.Spec
	if s.PodCIDR == "" {
		s.PodCIDR = v1alpha1.DefaultPodCIDR
	}
	if s.ServiceCIDR == "" {
		s.ServiceCIDR = v1alpha1.DefaultServiceCIDR
	}
	if s.ClusterDomain == "" {
		s.ClusterDomain = v1alpha1.DefaultClusterDomain
	}
	if s.StatusBranch == "" {
		s.StatusBranch = v1alpha1.DefaultStatusBranch
	}
}

// applyDefaults fills in what the Kubernetes API server would default, so
// that leaving a default out never shows up as a change.
//
// It follows the API server's defaulting functions (the SetDefaults_* of
// k8s.io/kubernetes pkg/apis/*/v1) and the few fields its registry fills
// in on create that do not depend on cluster state (a Service's
// ipFamilyPolicy). Fields whose presence changes meaning or that the API
// server allocates (a Service's clusterIP and nodePorts, a Job's generated
// selector) are left alone. Defaulting is idempotent.
func applyDefaults(o *Object) {
	switch v := o.Obj.(type) {
	case *corev1.Pod:
		defaultPod(v)
	case *corev1.Service:
		defaultService(&v.Spec)
	case *corev1.Secret:
		if v.Type == "" {
			v.Type = corev1.SecretTypeOpaque
		}
	case *corev1.Namespace:
		// The API server labels every namespace with its own name, so that
		// namespaceSelectors can pick one namespace.
		if v.Name != "" {
			if v.Labels == nil {
				v.Labels = map[string]string{}
			}
			v.Labels[corev1.LabelMetadataName] = v.Name
		}
	case *corev1.PersistentVolumeClaim:
		defaultPVCSpec(&v.Spec)
	case *appsv1.Deployment:
		defaultDeployment(&v.Spec)
		defaultPodSpec(&v.Spec.Template.Spec)
	case *appsv1.StatefulSet:
		defaultStatefulSet(&v.Spec)
		defaultPodSpec(&v.Spec.Template.Spec)
	case *appsv1.DaemonSet:
		defaultDaemonSet(&v.Spec)
		defaultPodSpec(&v.Spec.Template.Spec)
	case *batchv1.Job:
		defaultJobSpec(&v.Spec)
		// A Job without labels takes its pod template's.
		if v.Spec.Template.Labels != nil && len(v.Labels) == 0 {
			v.Labels = v.Spec.Template.Labels
		}
		defaultPodSpec(&v.Spec.Template.Spec)
	case *batchv1.CronJob:
		// The job template's JobSpec is not defaulted: only the Jobs the
		// CronJob creates are. Its pod template is, as in every template.
		defaultCronJob(&v.Spec)
		defaultPodSpec(&v.Spec.JobTemplate.Spec.Template.Spec)
	case *autoscalingv2.HorizontalPodAutoscaler:
		defaultHPA(&v.Spec)
	case *networkingv1.NetworkPolicy:
		defaultNetworkPolicy(&v.Spec)
	case *rbacv1.RoleBinding:
		defaultRoleRef(&v.RoleRef)
		defaultSubjects(v.Subjects)
	case *rbacv1.ClusterRoleBinding:
		defaultRoleRef(&v.RoleRef)
		defaultSubjects(v.Subjects)
	case *storagev1.StorageClass:
		if v.ReclaimPolicy == nil {
			v.ReclaimPolicy = ptrTo(corev1.PersistentVolumeReclaimDelete)
		}
		if v.VolumeBindingMode == nil {
			v.VolumeBindingMode = ptrTo(storagev1.VolumeBindingImmediate)
		}
	case *v1alpha1.Machine:
		defaultMachine(&v.Spec)
	case *v1alpha1.Cluster:
		defaultCluster(v)
	}
}

func ptrTo[T any](v T) *T { return &v }

// defaultPod applies what the API server defaults on a Pod only, on top of
// what every pod template gets: a Pod is what the kubelet runs, so these
// are not applied to the templates of workloads.
func defaultPod(p *corev1.Pod) {
	defaultPodSpec(&p.Spec)
	// Requests default to limits, resource by resource.
	for _, cs := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
		for i := range cs {
			r := &cs[i].Resources
			for name, lim := range r.Limits {
				if r.Requests == nil {
					r.Requests = corev1.ResourceList{}
				}
				if _, ok := r.Requests[name]; !ok {
					r.Requests[name] = lim.DeepCopy()
				}
			}
		}
	}
	if p.Spec.EnableServiceLinks == nil {
		p.Spec.EnableServiceLinks = ptrTo(corev1.DefaultEnableServiceLinks)
	}
	// On the host network a container port is a host port.
	if p.Spec.HostNetwork {
		for _, cs := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
			for i := range cs {
				for j := range cs[i].Ports {
					if cs[i].Ports[j].HostPort == 0 {
						cs[i].Ports[j].HostPort = cs[i].Ports[j].ContainerPort
					}
				}
			}
		}
	}
}

// defaultPodSpec applies the defaults of every pod spec, in a Pod or in a
// workload's template.
func defaultPodSpec(s *corev1.PodSpec) {
	if s.DNSPolicy == "" {
		s.DNSPolicy = corev1.DNSClusterFirst
	}
	// A Job's template gets Always too, as in Kubernetes, where validation
	// then asks for OnFailure or Never.
	if s.RestartPolicy == "" {
		s.RestartPolicy = corev1.RestartPolicyAlways
	}
	if s.SecurityContext == nil {
		s.SecurityContext = &corev1.PodSecurityContext{}
	}
	if s.TerminationGracePeriodSeconds == nil {
		s.TerminationGracePeriodSeconds = ptrTo(int64(corev1.DefaultTerminationGracePeriodSeconds))
	}
	if s.SchedulerName == "" {
		s.SchedulerName = corev1.DefaultSchedulerName
	}
	for i := range s.InitContainers {
		defaultContainer(&s.InitContainers[i])
	}
	for i := range s.Containers {
		defaultContainer(&s.Containers[i])
	}
	for i := range s.EphemeralContainers {
		defaultContainer((*corev1.Container)(&s.EphemeralContainers[i].EphemeralContainerCommon))
	}
	for i := range s.Volumes {
		defaultVolume(&s.Volumes[i])
	}
}

func defaultContainer(c *corev1.Container) {
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = defaultPullPolicy(c.Image)
	}
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = corev1.ProtocolTCP
		}
	}
	for i := range c.Env {
		if vf := c.Env[i].ValueFrom; vf != nil {
			defaultFieldRef(vf.FieldRef)
			if vf.FileKeyRef != nil && vf.FileKeyRef.Optional == nil {
				vf.FileKeyRef.Optional = ptrTo(false)
			}
		}
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		defaultProbe(p)
	}
	if l := c.Lifecycle; l != nil {
		for _, h := range []*corev1.LifecycleHandler{l.PostStart, l.PreStop} {
			if h != nil {
				defaultHTTPGet(h.HTTPGet)
			}
		}
	}
}

// defaultPullPolicy is Always for an image tagged latest (or not tagged
// and not pinned by digest, which means latest), IfNotPresent otherwise.
func defaultPullPolicy(image string) corev1.PullPolicy {
	if imageTag(image) == "latest" {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

// imageTag returns the tag of an image reference: "latest" when it has
// neither tag nor digest, "" when it has only a digest.
func imageTag(ref string) string {
	name, _, digested := strings.Cut(ref, "@")
	tag := ""
	if i := strings.LastIndexByte(name, ':'); i >= 0 && !strings.Contains(name[i+1:], "/") {
		tag = name[i+1:]
	}
	if tag == "" && !digested {
		return "latest"
	}
	return tag
}

func defaultProbe(p *corev1.Probe) {
	if p == nil {
		return
	}
	if p.TimeoutSeconds == 0 {
		p.TimeoutSeconds = 1
	}
	if p.PeriodSeconds == 0 {
		p.PeriodSeconds = 10
	}
	if p.SuccessThreshold == 0 {
		p.SuccessThreshold = 1
	}
	if p.FailureThreshold == 0 {
		p.FailureThreshold = 3
	}
	defaultHTTPGet(p.HTTPGet)
	if p.GRPC != nil && p.GRPC.Service == nil {
		p.GRPC.Service = ptrTo("")
	}
}

func defaultHTTPGet(h *corev1.HTTPGetAction) {
	if h == nil {
		return
	}
	if h.Path == "" {
		h.Path = "/"
	}
	if h.Scheme == "" {
		h.Scheme = corev1.URISchemeHTTP
	}
}

func defaultFieldRef(f *corev1.ObjectFieldSelector) {
	if f != nil && f.APIVersion == "" {
		f.APIVersion = "v1"
	}
}

func defaultVolume(v *corev1.Volume) {
	s := &v.VolumeSource
	if volumeSources(s) == 0 {
		s.EmptyDir = &corev1.EmptyDirVolumeSource{}
	}
	if s.ConfigMap != nil && s.ConfigMap.DefaultMode == nil {
		s.ConfigMap.DefaultMode = ptrTo(corev1.ConfigMapVolumeSourceDefaultMode)
	}
	if s.Secret != nil && s.Secret.DefaultMode == nil {
		s.Secret.DefaultMode = ptrTo(corev1.SecretVolumeSourceDefaultMode)
	}
	if s.DownwardAPI != nil {
		if s.DownwardAPI.DefaultMode == nil {
			s.DownwardAPI.DefaultMode = ptrTo(corev1.DownwardAPIVolumeSourceDefaultMode)
		}
		for i := range s.DownwardAPI.Items {
			defaultFieldRef(s.DownwardAPI.Items[i].FieldRef)
		}
	}
	if s.Projected != nil {
		if s.Projected.DefaultMode == nil {
			s.Projected.DefaultMode = ptrTo(corev1.ProjectedVolumeSourceDefaultMode)
		}
		for i := range s.Projected.Sources {
			src := &s.Projected.Sources[i]
			if t := src.ServiceAccountToken; t != nil && t.ExpirationSeconds == nil {
				t.ExpirationSeconds = ptrTo(int64(3600))
			}
			if src.DownwardAPI != nil {
				for j := range src.DownwardAPI.Items {
					defaultFieldRef(src.DownwardAPI.Items[j].FieldRef)
				}
			}
		}
	}
	if s.HostPath != nil && s.HostPath.Type == nil {
		s.HostPath.Type = ptrTo(corev1.HostPathUnset)
	}
	if s.Ephemeral != nil && s.Ephemeral.VolumeClaimTemplate != nil {
		defaultPVCSpec(&s.Ephemeral.VolumeClaimTemplate.Spec)
	}
	if s.Image != nil && s.Image.PullPolicy == "" {
		s.Image.PullPolicy = defaultPullPolicy(s.Image.Reference)
	}
}

// volumeSources counts the sources a volume names; exactly one is valid.
func volumeSources(s *corev1.VolumeSource) int {
	v := reflect.ValueOf(s).Elem()
	n := 0
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			n++
		}
	}
	return n
}

func defaultPVCSpec(s *corev1.PersistentVolumeClaimSpec) {
	if s.VolumeMode == nil {
		s.VolumeMode = ptrTo(corev1.PersistentVolumeFilesystem)
	}
}

func defaultService(s *corev1.ServiceSpec) {
	if s.Type == "" {
		s.Type = corev1.ServiceTypeClusterIP
	}
	if s.SessionAffinity == "" {
		s.SessionAffinity = corev1.ServiceAffinityNone
	}
	switch s.SessionAffinity {
	case corev1.ServiceAffinityNone:
		s.SessionAffinityConfig = nil
	case corev1.ServiceAffinityClientIP:
		if s.SessionAffinityConfig == nil || s.SessionAffinityConfig.ClientIP == nil || s.SessionAffinityConfig.ClientIP.TimeoutSeconds == nil {
			s.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{
				TimeoutSeconds: ptrTo(corev1.DefaultClientIPServiceAffinitySeconds),
			}}
		}
	}
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort == intstr.FromInt32(0) || p.TargetPort == intstr.FromString("") {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
	external := s.Type == corev1.ServiceTypeNodePort || s.Type == corev1.ServiceTypeLoadBalancer ||
		s.Type == corev1.ServiceTypeClusterIP && len(s.ExternalIPs) > 0
	if external && s.ExternalTrafficPolicy == "" {
		s.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	}
	if s.Type == corev1.ServiceTypeExternalName {
		return
	}
	if s.InternalTrafficPolicy == nil {
		s.InternalTrafficPolicy = ptrTo(corev1.ServiceInternalTrafficPolicyCluster)
	}
	if s.Type == corev1.ServiceTypeLoadBalancer && s.AllocateLoadBalancerNodePorts == nil {
		s.AllocateLoadBalancerNodePorts = ptrTo(true)
	}
	// Set by the API server's registry on create rather than by a
	// defaulting function, but from the Service alone: a headless Service
	// without a selector asks for both families, every other one for one.
	if s.IPFamilyPolicy == nil {
		if s.ClusterIP == corev1.ClusterIPNone && len(s.Selector) == 0 {
			s.IPFamilyPolicy = ptrTo(corev1.IPFamilyPolicyRequireDualStack)
		} else {
			s.IPFamilyPolicy = ptrTo(corev1.IPFamilyPolicySingleStack)
		}
	}
}

func defaultDeployment(s *appsv1.DeploymentSpec) {
	if s.Replicas == nil {
		s.Replicas = ptrTo(int32(1))
	}
	st := &s.Strategy
	if st.Type == "" {
		st.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if st.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if st.RollingUpdate == nil {
			st.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		if st.RollingUpdate.MaxUnavailable == nil {
			st.RollingUpdate.MaxUnavailable = ptrTo(intstr.FromString("25%"))
		}
		if st.RollingUpdate.MaxSurge == nil {
			st.RollingUpdate.MaxSurge = ptrTo(intstr.FromString("25%"))
		}
	}
	if s.RevisionHistoryLimit == nil {
		s.RevisionHistoryLimit = ptrTo(int32(10))
	}
	if s.ProgressDeadlineSeconds == nil {
		s.ProgressDeadlineSeconds = ptrTo(int32(600))
	}
}

func defaultStatefulSet(s *appsv1.StatefulSetSpec) {
	if s.Replicas == nil {
		s.Replicas = ptrTo(int32(1))
	}
	if s.PodManagementPolicy == "" {
		s.PodManagementPolicy = appsv1.OrderedReadyPodManagement
	}
	u := &s.UpdateStrategy
	if u.Type == "" {
		u.Type = appsv1.RollingUpdateStatefulSetStrategyType
		if u.RollingUpdate == nil {
			u.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{}
		}
	}
	if u.Type == appsv1.RollingUpdateStatefulSetStrategyType && u.RollingUpdate != nil && u.RollingUpdate.Partition == nil {
		u.RollingUpdate.Partition = ptrTo(int32(0))
	}
	if s.PersistentVolumeClaimRetentionPolicy == nil {
		s.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{}
	}
	r := s.PersistentVolumeClaimRetentionPolicy
	if r.WhenDeleted == "" {
		r.WhenDeleted = appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	}
	if r.WhenScaled == "" {
		r.WhenScaled = appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	}
	if s.RevisionHistoryLimit == nil {
		s.RevisionHistoryLimit = ptrTo(int32(10))
	}
	for i := range s.VolumeClaimTemplates {
		defaultPVCSpec(&s.VolumeClaimTemplates[i].Spec)
	}
}

func defaultDaemonSet(s *appsv1.DaemonSetSpec) {
	u := &s.UpdateStrategy
	if u.Type == "" {
		u.Type = appsv1.RollingUpdateDaemonSetStrategyType
	}
	if u.Type == appsv1.RollingUpdateDaemonSetStrategyType {
		if u.RollingUpdate == nil {
			u.RollingUpdate = &appsv1.RollingUpdateDaemonSet{}
		}
		if u.RollingUpdate.MaxUnavailable == nil {
			u.RollingUpdate.MaxUnavailable = ptrTo(intstr.FromInt32(1))
		}
		if u.RollingUpdate.MaxSurge == nil {
			u.RollingUpdate.MaxSurge = ptrTo(intstr.FromInt32(0))
		}
	}
	if s.RevisionHistoryLimit == nil {
		s.RevisionHistoryLimit = ptrTo(int32(10))
	}
}

func defaultJobSpec(s *batchv1.JobSpec) {
	// A non-parallel Job may leave both unset.
	if s.Completions == nil && s.Parallelism == nil {
		s.Completions = ptrTo(int32(1))
	}
	if s.Parallelism == nil {
		s.Parallelism = ptrTo(int32(1))
	}
	if s.BackoffLimit == nil {
		if s.BackoffLimitPerIndex != nil {
			// With a limit per index the global one is effectively off.
			s.BackoffLimit = ptrTo(int32(math.MaxInt32))
		} else {
			s.BackoffLimit = ptrTo(int32(6))
		}
	}
	if s.CompletionMode == nil {
		s.CompletionMode = ptrTo(batchv1.NonIndexedCompletion)
	}
	if s.Suspend == nil {
		s.Suspend = ptrTo(false)
	}
	if s.PodReplacementPolicy == nil {
		if s.PodFailurePolicy != nil {
			s.PodReplacementPolicy = ptrTo(batchv1.Failed)
		} else {
			s.PodReplacementPolicy = ptrTo(batchv1.TerminatingOrFailed)
		}
	}
}

func defaultCronJob(s *batchv1.CronJobSpec) {
	if s.ConcurrencyPolicy == "" {
		s.ConcurrencyPolicy = batchv1.AllowConcurrent
	}
	if s.Suspend == nil {
		s.Suspend = ptrTo(false)
	}
	if s.SuccessfulJobsHistoryLimit == nil {
		s.SuccessfulJobsHistoryLimit = ptrTo(int32(3))
	}
	if s.FailedJobsHistoryLimit == nil {
		s.FailedJobsHistoryLimit = ptrTo(int32(1))
	}
}

// The HPA's behavior rules when a behavior is given but leaves parts out:
// the scaling the HPA did before behaviors existed.
func defaultScaleUpRules() *autoscalingv2.HPAScalingRules {
	return &autoscalingv2.HPAScalingRules{
		StabilizationWindowSeconds: ptrTo(int32(0)),
		SelectPolicy:               ptrTo(autoscalingv2.MaxChangePolicySelect),
		Policies: []autoscalingv2.HPAScalingPolicy{
			{Type: autoscalingv2.PodsScalingPolicy, Value: 4, PeriodSeconds: 15},
			{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 15},
		},
	}
}

func defaultScaleDownRules() *autoscalingv2.HPAScalingRules {
	return &autoscalingv2.HPAScalingRules{
		// The stabilization window stays unset: the controller's
		// --horizontal-pod-autoscaler-downscale-stabilization decides.
		SelectPolicy: ptrTo(autoscalingv2.MaxChangePolicySelect),
		Policies: []autoscalingv2.HPAScalingPolicy{
			{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 15},
		},
	}
}

// fillScalingRules returns the defaults with every field set in r kept.
func fillScalingRules(r, def *autoscalingv2.HPAScalingRules) *autoscalingv2.HPAScalingRules {
	if r == nil {
		return def
	}
	if r.SelectPolicy != nil {
		def.SelectPolicy = r.SelectPolicy
	}
	if r.StabilizationWindowSeconds != nil {
		def.StabilizationWindowSeconds = r.StabilizationWindowSeconds
	}
	if r.Policies != nil {
		def.Policies = r.Policies
	}
	if r.Tolerance != nil {
		def.Tolerance = r.Tolerance
	}
	return def
}

// defaultCPUUtilization is the target of an HPA that names no metric, as
// in Kubernetes.
const defaultCPUUtilization = 80

func defaultHPA(s *autoscalingv2.HorizontalPodAutoscalerSpec) {
	if s.MinReplicas == nil {
		s.MinReplicas = ptrTo(int32(1))
	}
	if len(s.Metrics) == 0 {
		s.Metrics = []autoscalingv2.MetricSpec{{
			Type: autoscalingv2.ResourceMetricSourceType,
			Resource: &autoscalingv2.ResourceMetricSource{
				Name: corev1.ResourceCPU,
				Target: autoscalingv2.MetricTarget{
					Type:               autoscalingv2.UtilizationMetricType,
					AverageUtilization: ptrTo(int32(defaultCPUUtilization)),
				},
			},
		}}
	}
	if b := s.Behavior; b != nil {
		b.ScaleUp = fillScalingRules(b.ScaleUp, defaultScaleUpRules())
		b.ScaleDown = fillScalingRules(b.ScaleDown, defaultScaleDownRules())
	}
}

func defaultNetworkPolicy(s *networkingv1.NetworkPolicySpec) {
	// A policy that names no types is at least an ingress policy.
	if len(s.PolicyTypes) == 0 {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(s.Egress) != 0 {
			s.PolicyTypes = append(s.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
	}
	for i := range s.Ingress {
		defaultPolicyPorts(s.Ingress[i].Ports)
	}
	for i := range s.Egress {
		defaultPolicyPorts(s.Egress[i].Ports)
	}
}

func defaultPolicyPorts(ps []networkingv1.NetworkPolicyPort) {
	for i := range ps {
		if ps[i].Protocol == nil {
			ps[i].Protocol = ptrTo(corev1.ProtocolTCP)
		}
	}
}

func defaultRoleRef(r *rbacv1.RoleRef) {
	if r.APIGroup == "" {
		r.APIGroup = rbacv1.GroupName
	}
}

func defaultSubjects(ss []rbacv1.Subject) {
	for i := range ss {
		s := &ss[i]
		if s.APIGroup == "" && (s.Kind == rbacv1.UserKind || s.Kind == rbacv1.GroupKind) {
			s.APIGroup = rbacv1.GroupName
		}
	}
}

func defaultMachine(s *v1alpha1.MachineSpec) {
	if s.SSH.User == "" {
		s.SSH.User = v1alpha1.DefaultSSHUser
	}
	if s.SSH.Port == 0 {
		s.SSH.Port = v1alpha1.DefaultSSHPort
	}
	a := &s.Agent
	if a.StateDir == "" {
		a.StateDir = v1alpha1.DefaultStateDir
	}
	if a.Socket == "" {
		a.Socket = v1alpha1.DefaultSocket
	}
	if a.LogDir == "" {
		a.LogDir = v1alpha1.DefaultLogDir
	}
	if a.ContainerdAddress == "" {
		a.ContainerdAddress = v1alpha1.DefaultContainerd
	}
	if a.Namespace == "" {
		a.Namespace = v1alpha1.DefaultNamespace
	}
	if a.BinaryPath == "" {
		a.BinaryPath = v1alpha1.DefaultBinaryPath
	}
}
