package workload

import (
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/render"
)

// Labels and annotations the controllers put on the pods they want, so
// that a later pass (possibly by a controller that lost its memory) can
// tell from the observed pods alone who owns what.
const (
	LabelOwnerKind = "berth.dev/owner-kind" // Deployment, StatefulSet, DaemonSet, Job, Pod
	LabelOwnerName = "berth.dev/owner"      // the owning object's name
	LabelCronJob   = "berth.dev/cronjob"    // on pods of a Job a CronJob started
	// AnnotationScheduled carries a CronJob run's scheduled time (RFC
	// 3339, UTC) on its pods.
	AnnotationScheduled = "berth.dev/scheduled-time"

	LabelPodTemplateHash      = "pod-template-hash"
	LabelControllerRevision   = "controller-revision-hash"
	LabelStatefulSetPodName   = "statefulset.kubernetes.io/pod-name"
	LabelPodIndex             = "apps.kubernetes.io/pod-index"
	LabelJobName              = "job-name"
	LabelBatchJobName         = "batch.kubernetes.io/job-name"
	LabelJobCompletionIndex   = "batch.kubernetes.io/job-completion-index"
	AnnotationCompletionIndex = "batch.kubernetes.io/job-completion-index"
	EnvJobCompletionIndex     = "JOB_COMPLETION_INDEX"
)

// Owner names the workload a pod belongs to. Kind is Pod for a bare pod
// (Name is then the pod's own name).
type Owner struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// String is "Kind ns/name", the way plans name an object.
func (o Owner) String() string { return o.Kind + " " + o.Namespace + "/" + o.Name }

// OwnerFromLabels reads the owner the controllers recorded on a pod.
func OwnerFromLabels(namespace string, labels map[string]string) (Owner, bool) {
	k, n := labels[LabelOwnerKind], labels[LabelOwnerName]
	if k == "" || n == "" {
		return Owner{}, false
	}
	return Owner{Kind: k, Namespace: namespace, Name: n}, true
}

// Machine is a place pods run, as far as the controllers care.
type Machine struct {
	Name string
	// Reachable: the machine's agent answered in this pass. Pods on an
	// unreachable machine are counted as unavailable and never stopped or
	// replaced (the controller cannot tell whether they run), so a
	// rollout pauses until the machine is back.
	Reachable bool
	// UnreachableSince is when the machine was first found unreachable
	// (zero when unknown); see Options.RescheduleAfter.
	UnreachableSince time.Time
	Labels           map[string]string
	Taints           []corev1.Taint
}

// ContainerState is what a pass needs of one container's status.
type ContainerState struct {
	Name         string
	RestartCount int32
	// ExitCode of the last terminated instance, nil while it never ended.
	ExitCode *int32
	// FinishedAt is when that instance ended.
	FinishedAt time.Time
}

// Pod is one observed pod. The reconciler builds it from the agents'
// api.PodStatus and the api.Pod it sent (for labels and machine).
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	// Owner is read from Labels (OwnerFromLabels) when left zero.
	Owner   Owner
	Machine string
	// TemplateHash is the hash of the template the pod was made from
	// (its pod-template-hash or controller-revision-hash label when
	// empty).
	TemplateHash string
	Phase        corev1.PodPhase
	Ready        bool
	// ReadySince is when Ready last became true; zero falls back to
	// StartedAt.
	ReadySince  time.Time
	StartedAt   time.Time
	Created     time.Time
	Terminating bool
	Containers  []ContainerState
}

// Options configure a pass. TemplateHash is required.
type Options struct {
	// TemplateHash names a pod template's revision (resolve.TemplateHash).
	// It must be deterministic and change whenever the template does.
	TemplateHash func(*corev1.PodTemplateSpec) string
	// Eligible says whether a DaemonSet pod with this spec may run on the
	// machine (nodeSelector, required node affinity, tolerated taints: the
	// scheduler's filters). Nil means every machine is eligible.
	Eligible func(spec *corev1.PodSpec, m Machine) bool
	// RescheduleAfter is how long a machine may be unreachable before the
	// pods of Deployments and Jobs on it are given up and replaced
	// elsewhere (they are stopped when it comes back). Zero: never;
	// StatefulSet, DaemonSet and bare pods always wait for their machine.
	RescheduleAfter time.Duration
}

// ErrNoTemplateHash is returned by Validate when Options.TemplateHash is nil.
var ErrNoTemplateHash = errors.New("workload options: TemplateHash is required")

// Validate checks the options.
func (o Options) Validate() error {
	if o.TemplateHash == nil {
		return ErrNoTemplateHash
	}
	if o.RescheduleAfter < 0 {
		return fmt.Errorf("workload options: RescheduleAfter %s is negative", o.RescheduleAfter)
	}
	return nil
}

// Input is everything one pass looks at.
type Input struct {
	// Objects are the desired objects (render.Desired.Objects); kinds
	// other than Pod, Deployment, StatefulSet, DaemonSet, Job and CronJob
	// are ignored.
	Objects  []*render.Object
	Machines []Machine
	Pods     []Pod
	// Memory is what the previous pass returned (zero on first run, or
	// when lost: every controller recovers from the observed pods).
	Memory Memory
	Now    time.Time
}

// Action says what a wanted pod means for the machines.
type Action string

// Actions.
const (
	// Keep: the pod exists and stays as it is.
	Keep Action = "keep"
	// Create: the pod does not exist yet; start it.
	Create Action = "create"
	// Replace: a pod of this name exists with another template; the agent
	// stops it and starts this one under the same name.
	Replace Action = "replace"
)

// WantedPod is one pod that should exist after this pass.
type WantedPod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Owner     Owner  `json:"owner"`
	// Hash is the template hash the pod runs (for kept pods of an old
	// revision, the observed one).
	Hash string `json:"hash"`
	// Template is what to run, with the owner labels added; nil for a
	// kept pod of an older revision (keep what runs; its template is no
	// longer in git).
	Template *corev1.PodTemplateSpec `json:"template,omitempty"`
	// Machine is where the pod must run: the machine it is bound to, or a
	// DaemonSet's machine, or spec.nodeName. Empty: the scheduler places
	// it.
	Machine string `json:"machine,omitempty"`
	Action  Action `json:"action"`
	Reason  string `json:"reason,omitempty"`
}

// Key is "namespace/name".
func (p WantedPod) Key() string { return p.Namespace + "/" + p.Name }

// Stop is an observed pod that should no longer exist.
type Stop struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Owner     Owner  `json:"owner"`
	Machine   string `json:"machine,omitempty"`
	Reason    string `json:"reason"`
}

// Condition is a workload condition, as in Kubernetes.
type Condition struct {
	Type               string                 `json:"type"`
	Status             corev1.ConditionStatus `json:"status"`
	Reason             string                 `json:"reason,omitempty"`
	Message            string                 `json:"message,omitempty"`
	LastTransitionTime time.Time              `json:"lastTransitionTime,omitzero"`
}

// Status is what a workload reports; fields that do not apply to its kind
// stay zero.
type Status struct {
	Replicas            int32 `json:"replicas"`
	ReadyReplicas       int32 `json:"readyReplicas"`
	UpdatedReplicas     int32 `json:"updatedReplicas"`
	AvailableReplicas   int32 `json:"availableReplicas"`
	UnavailableReplicas int32 `json:"unavailableReplicas,omitempty"`
	// Revision is a Deployment's current revision number.
	Revision        int64  `json:"revision,omitempty"`
	CurrentRevision string `json:"currentRevision,omitempty"`
	UpdateRevision  string `json:"updateRevision,omitempty"`
	// DaemonSet.
	DesiredNumberScheduled int32 `json:"desiredNumberScheduled,omitempty"`
	NumberMisscheduled     int32 `json:"numberMisscheduled,omitempty"`
	// Job.
	Active           int32      `json:"active,omitempty"`
	Succeeded        int32      `json:"succeeded,omitempty"`
	Failed           int32      `json:"failed,omitempty"`
	CompletedIndexes string     `json:"completedIndexes,omitempty"`
	StartTime        *time.Time `json:"startTime,omitempty"`
	CompletionTime   *time.Time `json:"completionTime,omitempty"`
	// CronJob.
	ActiveJobs         []string   `json:"activeJobs,omitempty"`
	LastScheduleTime   *time.Time `json:"lastScheduleTime,omitempty"`
	LastSuccessfulTime *time.Time `json:"lastSuccessfulTime,omitempty"`
	NextScheduleTime   *time.Time `json:"nextScheduleTime,omitempty"`

	Conditions []Condition `json:"conditions,omitempty"`
}

// Workload is one workload's part of a pass.
type Workload struct {
	Owner Owner `json:"owner"`
	// Pods that should exist after this pass, sorted by name.
	Pods []WantedPod `json:"pods"`
	// Stop lists observed pods that should go, sorted by name.
	Stop   []Stop `json:"stop,omitempty"`
	Status Status `json:"status"`
	// Reason says in one line what this pass does and what it waits for.
	Reason string `json:"reason"`
}

// Changes counts the pods this pass starts, replaces or stops.
func (w *Workload) Changes() int {
	n := len(w.Stop)
	for _, p := range w.Pods {
		if p.Action != Keep {
			n++
		}
	}
	return n
}

// Result is the outcome of a pass.
type Result struct {
	// Workloads, sorted by owner kind, namespace and name.
	Workloads []Workload `json:"workloads"`
	// Orphans are observed pods whose owner is no longer desired.
	Orphans []Stop `json:"orphans,omitempty"`
	// Memory to hand to the next pass (and keep in the status branch).
	Memory Memory `json:"memory"`
	// Wake is the earliest time a pass should run again even if nothing
	// is observed to change (a minReadySeconds or deadline expiring, a
	// CronJob's next run); zero when no timer is pending.
	Wake time.Time `json:"wake,omitzero"`
}

// Changes counts all starts, replacements and stops of the pass; zero on
// a converged state.
func (r *Result) Changes() int {
	n := len(r.Orphans)
	for i := range r.Workloads {
		n += r.Workloads[i].Changes()
	}
	return n
}

// Memory is what the controllers remember between passes, kept by the
// reconciler in the status branch. Everything in it can be lost: a pass
// with an empty Memory rebuilds what it needs from the observed pods (a
// Deployment numbers its revisions afresh, a progress deadline restarts,
// a CronJob does not run schedules it missed before it was seen).
type Memory struct {
	// Workloads by Owner.String().
	Workloads map[string]*WorkloadMemory `json:"workloads,omitempty"`
}

// WorkloadMemory is one workload's memory.
type WorkloadMemory struct {
	// Revisions known for a Deployment, oldest first.
	Revisions []Revision `json:"revisions,omitempty"`
	// Progress is the last time a Deployment's rollout moved.
	Progress *Progress `json:"progress,omitempty"`
	// Job is a Job's bookkeeping.
	Job *JobMemory `json:"job,omitempty"`
	// CronJob is a CronJob's bookkeeping.
	CronJob *CronJobMemory `json:"cronJob,omitempty"`
	// Conditions as last reported, for their transition times.
	Conditions []Condition `json:"conditions,omitempty"`
}

// Revision numbers a Deployment's template hash, as Kubernetes'
// deployment.kubernetes.io/revision does.
type Revision struct {
	Hash   string    `json:"hash"`
	Number int64     `json:"number"`
	Since  time.Time `json:"since"`
}

// Progress records the rollout state last seen and since when; a change
// of any counter is progress.
type Progress struct {
	Hash      string    `json:"hash"`
	Desired   int32     `json:"desired"`
	Replicas  int32     `json:"replicas"`
	Updated   int32     `json:"updated"`
	Available int32     `json:"available"`
	Old       int32     `json:"old"`
	Since     time.Time `json:"since"`
}

// JobMemory is a Job's bookkeeping.
type JobMemory struct {
	StartTime      time.Time `json:"startTime,omitzero"`
	CompletionTime time.Time `json:"completionTime,omitzero"`
	// Finished is Complete or Failed once the Job ended; it never runs
	// again (until its memory is lost after its pods were cleaned up).
	Finished string `json:"finished,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Succeeded and Failed at the end, kept for status once pods are gone.
	Succeeded int32 `json:"succeeded,omitempty"`
	Failed    int32 `json:"failed,omitempty"`
	// CleanedUp: ttlSecondsAfterFinished passed and the pods were removed.
	CleanedUp bool `json:"cleanedUp,omitempty"`
}

// CronJobMemory is a CronJob's bookkeeping.
type CronJobMemory struct {
	// FirstSeen bounds how far back missed schedules are looked for.
	FirstSeen          time.Time `json:"firstSeen"`
	LastScheduleTime   time.Time `json:"lastScheduleTime,omitzero"`
	LastSuccessfulTime time.Time `json:"lastSuccessfulTime,omitzero"`
	// Runs are the Jobs it started and still remembers, by scheduled time.
	Runs []CronRun `json:"runs,omitempty"`
}

// CronRun is one Job a CronJob started.
type CronRun struct {
	Name      string    `json:"name"`
	Scheduled time.Time `json:"scheduled"`
}
