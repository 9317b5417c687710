package chart

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/bargeml/barge/internal/testenv"
	"github.com/bargeml/barge/registry"
)

// variants are value sets that together turn every optional part on.
var variants = map[string][]string{
	"defaults": nil,
	"everything": {
		"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
		"--set", "edgePuller.registryConfigSecret=regcred,registry.htpasswd.secretName=htpasswd",
		"--set", "edgePuller.mirrors={cache.local:5000,http://spegel:5000},edgePuller.limitRate=2M,edgePuller.quota=20G",
		"--set", "edgePuller.limitUploadRate=1M",
		"--set", "edgePuller.pullTimeout=12h,edgePuller.requestTimeout=30s,edgePuller.kubeAPIQPS=20,edgePuller.kubeAPIBurst=40",
		"--set", "edgePuller.peers.enabled=true",
		"--set", "registry.service.type=NodePort,registry.service.nodePort=30500",
		"--set-json", `controller.servingImages={"onnx":{"image":"registry.example.com/onnx:1","args":["--port","8001"],"port":8001}}`,
	},
	"no registry":                  {"--set", "registry.enabled=false"},
	"registry without persistence": {"--set", "registry.persistence.enabled=false"},
	"registry on s3":               {"--set", "registry.replicas=2,registry.storage.type=s3,registry.storage.s3.bucket=models,registry.storage.s3.credentialsSecret=s3-keys"},
	"no puller":                    {"--set", "edgePuller.enabled=false"},
}

func TestLint(t *testing.T) {
	for name, args := range variants {
		t.Run(name, func(t *testing.T) {
			base := []string{"lint", "--strict", chartDir, "--namespace", namespace, "--kube-version", kubeVersion}
			for i := 0; i < len(args); i++ {
				if args[i] == "--api-versions" { // not a lint flag
					i++
					continue
				}
				base = append(base, args[i])
			}
			if out, err := helm(base...); err != nil {
				t.Fatal(err)
			} else if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint: %s", out)
			}
		})
	}
}

func TestDefaultObjects(t *testing.T) {
	objs := render(t)
	got := map[string]int{}
	for _, o := range objs {
		got[o.GetKind()+"/"+o.GetLabels()["app.kubernetes.io/component"]]++
	}
	want := map[string]int{
		"ServiceAccount/controller":      1,
		"ClusterRole/controller":         1,
		"ClusterRoleBinding/controller":  1,
		"Role/controller":                1, // leader election
		"Role/controller-secrets":        1, // get on pull secrets in the release namespace
		"RoleBinding/controller-secrets": 1,
		"RoleBinding/controller":         1,
		"ConfigMap/controller":           1, // serving images
		"Deployment/controller":          1,
		"Service/controller":             1, // metrics
		"ServiceAccount/edgepuller":      1,
		"ClusterRole/edgepuller":         1,
		"ClusterRoleBinding/edgepuller":  1,
		"DaemonSet/edgepuller":           1,
		"Service/edgepuller":             1, // metrics, headless
		"PersistentVolumeClaim/registry": 1,
		"Deployment/registry":            1,
		"Service/registry":               1,
		"Secret/registry":                4, // users, pull credentials, TLS, upload secret
		"ConfigMap/registry":             1, // the CA pullers and controller trust
		"NetworkPolicy/registry":         1,
		// the pullers' node scope
		"ValidatingAdmissionPolicy/edgepuller":        1,
		"ValidatingAdmissionPolicyBinding/edgepuller": 1,
	}
	if !maps.Equal(got, want) {
		t.Errorf("rendered kinds/components:\n got %v\nwant %v", got, want)
	}
	for _, o := range objs {
		labels := o.GetLabels()
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
			"app.kubernetes.io/managed-by", "app.kubernetes.io/component", "app.kubernetes.io/part-of", "helm.sh/chart"} {
			if labels[k] == "" {
				t.Errorf("%s %s: no label %s", o.GetKind(), o.GetName(), k)
			}
		}
		clusterScoped := slices.Contains([]string{"ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}, o.GetKind())
		if !clusterScoped && o.GetNamespace() != namespace {
			t.Errorf("%s %s: namespace %q, want the release's %q", o.GetKind(), o.GetName(), o.GetNamespace(), namespace)
		}
	}
}

// podSpecs returns the pod template of every workload, by object name.
func podSpecs(t *testing.T, objs objects) map[string]*corev1.PodTemplateSpec {
	specs := map[string]*corev1.PodTemplateSpec{}
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			specs[o.GetName()] = &decode[appsv1.Deployment](t, o).Spec.Template
		case "DaemonSet":
			specs[o.GetName()] = &decode[appsv1.DaemonSet](t, o).Spec.Template
		case "StatefulSet", "Job", "CronJob", "Pod", "ReplicaSet":
			t.Errorf("%s %s: a workload kind this test does not check", o.GetKind(), o.GetName())
		}
	}
	return specs
}

func TestSecurityContexts(t *testing.T) {
	for name, args := range variants {
		t.Run(name, func(t *testing.T) {
			objs := render(t, args...)
			for workload, tmpl := range podSpecs(t, objs) {
				pod := tmpl.Spec
				if pod.HostNetwork || pod.HostPID || pod.HostIPC {
					t.Errorf("%s: shares a host namespace", workload)
				}
				puller := tmpl.Labels["app.kubernetes.io/component"] == "edgepuller"
				for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
					where := workload + "/" + c.Name
					checkContainer(t, where, pod.SecurityContext, c, !puller)
				}
			}
		})
	}
}

// checkContainer checks the effective security context of a container: its
// own settings, or the pod's where the container leaves a field unset.
func checkContainer(t *testing.T, where string, pod *corev1.PodSecurityContext, c corev1.Container, nonRoot bool) {
	t.Helper()
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", where)
		return
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities %+v, want drop [ALL] and nothing added", where, sc.Capabilities)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile %+v, want RuntimeDefault", where, seccomp)
	}
	// The one host port: the puller's peer server, where the controller
	// tells the site's other pullers to find it (edgePuller.peers.hostPort).
	if len(c.Ports) > 0 && slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
		return p.HostPort != 0 && !(c.Name == "edgepuller" && p.Name == "peers" && p.HostPort == p.ContainerPort)
	}) {
		t.Errorf("%s: a host port", where)
	}
	if !nonRoot {
		return
	}
	runAsNonRoot := sc.RunAsNonRoot
	if runAsNonRoot == nil {
		runAsNonRoot = pod.RunAsNonRoot
	}
	uid := sc.RunAsUser
	if uid == nil {
		uid = pod.RunAsUser
	}
	if runAsNonRoot == nil || !*runAsNonRoot || uid == nil || *uid == 0 {
		t.Errorf("%s: must run as a non-root user (runAsNonRoot %v, runAsUser %v)", where, deref(runAsNonRoot), deref(uid))
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}

// TestEdgePullerSecurityContext pins the puller's documented default (root
// without any capability, because kubelet creates the hostPath as root:root
// 0755) and checks that the documented non-root alternative renders.
func TestEdgePullerSecurityContext(t *testing.T) {
	ds := decode[appsv1.DaemonSet](t, render(t).one(t, "DaemonSet", "edgepuller"))
	pod := ds.Spec.Template.Spec.SecurityContext
	if pod == nil || pod.RunAsUser == nil || *pod.RunAsUser != 0 {
		t.Errorf("default puller pod securityContext %+v: want runAsUser 0 as values.yaml documents", pod)
	}

	nonRoot := `edgePuller.podSecurityContext={"runAsNonRoot":true,"runAsUser":65532,"runAsGroup":65532,"seccompProfile":{"type":"RuntimeDefault"}}`
	ds = decode[appsv1.DaemonSet](t, render(t, "--set-json", nonRoot).one(t, "DaemonSet", "edgepuller"))
	spec := ds.Spec.Template.Spec
	for _, c := range spec.Containers {
		checkContainer(t, "non-root puller/"+c.Name, spec.SecurityContext, c, true)
	}
}

// rbacRules flattens rules into "group resource verb" triples.
func rbacRules(t *testing.T, where string, rules []rbacv1.PolicyRule) []string {
	t.Helper()
	var out []string
	for _, r := range rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("%s: a rule with resourceNames or nonResourceURLs: %+v", where, r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if g == "*" || res == "*" || v == "*" || strings.Contains(res, "*") {
						t.Errorf("%s: a wildcard in %+v", where, r)
					}
					out = append(out, g+" "+res+" "+v)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func triples(group string, resources []string, verbs ...string) []string {
	var out []string
	for _, r := range resources {
		for _, v := range verbs {
			out = append(out, group+" "+r+" "+v)
		}
	}
	return out
}

// boundTo checks that a binding's subject is the ServiceAccount the workload runs as.
func boundTo(t *testing.T, objs objects, bindingKind, component, role string) {
	t.Helper()
	o := objs.one(t, bindingKind, component)
	var b struct {
		Name     string
		RoleRef  rbacv1.RoleRef
		Subjects []rbacv1.Subject
	}
	if bindingKind == "RoleBinding" {
		rb := decode[rbacv1.RoleBinding](t, o)
		b.Name, b.RoleRef, b.Subjects = rb.Name, rb.RoleRef, rb.Subjects
	} else {
		crb := decode[rbacv1.ClusterRoleBinding](t, o)
		b.Name, b.RoleRef, b.Subjects = crb.Name, crb.RoleRef, crb.Subjects
	}
	sa := objs.one(t, "ServiceAccount", component)
	if b.RoleRef.Name != role {
		t.Errorf("%s %s refers to %s, want %s", bindingKind, b.Name, b.RoleRef.Name, role)
	}
	if len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != sa.GetName() || b.Subjects[0].Namespace != namespace {
		t.Errorf("%s %s subjects %+v, want only ServiceAccount %s/%s", bindingKind, b.Name, b.Subjects, namespace, sa.GetName())
	}
	for name, tmpl := range podSpecs(t, objs) {
		if tmpl.Labels["app.kubernetes.io/component"] == component && tmpl.Spec.ServiceAccountName != sa.GetName() {
			t.Errorf("%s runs as %q, not the bound ServiceAccount %s", name, tmpl.Spec.ServiceAccountName, sa.GetName())
		}
	}
}

func TestEdgePullerRBAC(t *testing.T) {
	objs := render(t)
	role := decode[rbacv1.ClusterRole](t, objs.one(t, "ClusterRole", "edgepuller"))
	got := rbacRules(t, "puller ClusterRole", role.Rules)
	want := slices.Concat(
		triples("barge.dev", []string{"nodeartifacts"}, "get", "list", "watch", "patch"),
		triples("barge.dev", []string{"nodeartifacts/status"}, "patch"),
	)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("puller ClusterRole grants\n%s\nwant exactly\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := len(objs.find("Role", "edgepuller")); n != 0 {
		t.Errorf("the puller has %d Roles besides its ClusterRole", n)
	}
	boundTo(t, objs, "ClusterRoleBinding", "edgepuller", role.Name)
}

func TestControllerRBAC(t *testing.T) {
	objs := render(t)
	role := decode[rbacv1.ClusterRole](t, objs.one(t, "ClusterRole", "controller"))
	got := rbacRules(t, "controller ClusterRole", role.Rules)
	// The controller's tests run under the rules of its +kubebuilder:rbac
	// markers; the chart must grant exactly those, leases aside (a Role in
	// the release namespace).
	var want, leases []string
	for _, r := range markerRules(t, filepath.Join(chartDir, "..", "..", "controllers", "manager.go")) {
		if strings.HasPrefix(r, "coordination.k8s.io leases ") {
			leases = append(leases, r)
		} else {
			want = append(want, r)
		}
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("controller ClusterRole grants\n%s\nwant exactly\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	boundTo(t, objs, "ClusterRoleBinding", "controller", role.Name)

	lease := decode[rbacv1.Role](t, objs.one(t, "Role", "controller"))
	if lease.Namespace != namespace {
		t.Errorf("leader election Role in %q, want the release namespace", lease.Namespace)
	}
	got = rbacRules(t, "leader election Role", lease.Rules)
	sort.Strings(leases)
	if !slices.Equal(got, leases) {
		t.Errorf("leader election Role grants %v, want %v", got, leases)
	}
	boundTo(t, objs, "RoleBinding", "controller", lease.Name)
}

func container(t *testing.T, tmpl *corev1.PodTemplateSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range tmpl.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

// flag returns the value of --name=value in args, and whether it is there.
func flag(args []string, name string) (string, bool) {
	for _, a := range args {
		if a == "--"+name {
			return "", true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func mountOf(t *testing.T, c corev1.Container, volume string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m
		}
	}
	t.Fatalf("container %s does not mount volume %s", c.Name, volume)
	return corev1.VolumeMount{}
}

func volumeOf(t *testing.T, tmpl *corev1.PodTemplateSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range tmpl.Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s", name)
	return corev1.Volume{}
}

func TestControllerDeployment(t *testing.T) {
	objs := render(t, variants["everything"]...)
	d := decode[appsv1.Deployment](t, objs.one(t, "Deployment", "controller"))
	c := container(t, &d.Spec.Template, "controller")
	for name, want := range map[string]string{
		"metrics-bind-address":      ":8080",
		"health-probe-bind-address": ":8081",
		"leader-elect":              "",
		"barge-image":               c.Image,
	} {
		if got, ok := flag(c.Args, name); !ok || got != want {
			t.Errorf("--%s: got %q (present %v), want %q", name, got, ok, want)
		}
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" ||
		c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("probes: liveness %+v, readiness %+v; want /healthz and /readyz", c.LivenessProbe, c.ReadinessProbe)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["metrics"] != 8080 || ports["health"] != 8081 {
		t.Errorf("ports %v, want metrics 8080 and health 8081", ports)
	}

	// --serving-images names a key of the ConfigMap, through its mount, and the
	// key holds controller.servingImages.
	file, _ := flag(c.Args, "serving-images")
	vol := volumeOf(t, &d.Spec.Template, "serving-images")
	mount := mountOf(t, c, "serving-images")
	cm := decode[corev1.ConfigMap](t, objs.one(t, "ConfigMap", "controller"))
	if vol.ConfigMap == nil || vol.ConfigMap.Name != cm.Name {
		t.Fatalf("volume serving-images %+v, want ConfigMap %s", vol, cm.Name)
	}
	key, ok := strings.CutPrefix(file, mount.MountPath+"/")
	if !ok || cm.Data[key] == "" {
		t.Fatalf("--serving-images=%s: not a key of ConfigMap %s mounted at %s (keys %v)", file, cm.Name, mount.MountPath, keys(cm.Data))
	}
	var serving map[string]struct {
		Image string
		Args  []string
		Port  int
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data[key]), &serving); err != nil {
		t.Fatal(err)
	}
	if onnx := serving["onnx"]; onnx.Image != "registry.example.com/onnx:1" || onnx.Port != 8001 || !slices.Equal(onnx.Args, []string{"--port", "8001"}) {
		t.Errorf("serving images file: %+v", serving)
	}

	d = decode[appsv1.Deployment](t, render(t, "--set", "controller.leaderElect=false").one(t, "Deployment", "controller"))
	if _, ok := flag(container(t, &d.Spec.Template, "controller").Args, "leader-elect"); ok {
		t.Error("leaderElect=false still passes --leader-elect")
	}
	if _, err := renderErr("--set", "controller.leaderElect=false,controller.replicas=2"); err == nil || !strings.Contains(err.Error(), "needs controller.leaderElect") {
		t.Errorf("2 replicas without leader election: %v, want an error", err)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestEdgePullerDaemonSet(t *testing.T) {
	ds := decode[appsv1.DaemonSet](t, render(t).one(t, "DaemonSet", "edgepuller"))
	tmpl := &ds.Spec.Template
	c := container(t, tmpl, "edgepuller")
	var nodeName *corev1.EnvVar
	for i, e := range c.Env {
		if e.Name == "NODE_NAME" {
			nodeName = &c.Env[i]
		}
	}
	if nodeName == nil || nodeName.ValueFrom == nil || nodeName.ValueFrom.FieldRef == nil || nodeName.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME: %+v, want it from spec.nodeName", nodeName)
	}
	if v, _ := flag(c.Args, "node-name"); v != "$(NODE_NAME)" {
		t.Errorf("--node-name=%q, want $(NODE_NAME)", v)
	}
	// Default: no optional flags. The credentials of the chart's registry
	// are passed by default (TestRegistryPullCredentials), and --quota has a
	// default (TestDefaultNodeQuota).
	for _, f := range []string{"mirror", "limit-rate", "limit-upload-rate"} {
		if _, ok := flag(c.Args, f); ok {
			t.Errorf("--%s passed with default values", f)
		}
	}
	// The hostPath is the only host volume, mounted where --root says, at its
	// host path, so the paths in NodeArtifact status are host paths.
	root, _ := flag(c.Args, "root")
	vol := volumeOf(t, tmpl, "root")
	if vol.HostPath == nil || vol.HostPath.Path != root || root != "/var/lib/barge" || mountOf(t, c, "root").MountPath != root {
		t.Errorf("--root=%s, volume %+v, mount %s: want /var/lib/barge everywhere", root, vol.HostPath, mountOf(t, c, "root").MountPath)
	}
	for _, v := range tmpl.Spec.Volumes {
		if v.HostPath != nil && v.Name != "root" {
			t.Errorf("another hostPath volume: %+v", v)
		}
	}
	if !slices.ContainsFunc(tmpl.Spec.Tolerations, func(tol corev1.Toleration) bool { return tol.Key == "node-role.kubernetes.io/edge" }) {
		t.Errorf("tolerations %+v: KubeEdge edge nodes' taint is not tolerated", tmpl.Spec.Tolerations)
	}

	ds = decode[appsv1.DaemonSet](t, render(t, variants["everything"]...).one(t, "DaemonSet", "edgepuller"))
	c = container(t, &ds.Spec.Template, "edgepuller")
	var mirrors []string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--mirror="); ok {
			mirrors = append(mirrors, v)
		}
	}
	if !slices.Equal(mirrors, []string{"cache.local:5000", "http://spegel:5000"}) {
		t.Errorf("mirrors %v, want both, in order", mirrors)
	}
	if v, _ := flag(c.Args, "limit-rate"); v != "2M" {
		t.Errorf("--limit-rate=%q", v)
	}
	if v, _ := flag(c.Args, "limit-upload-rate"); v != "1M" {
		t.Errorf("--limit-upload-rate=%q", v)
	}
	if v, _ := flag(c.Args, "quota"); v != "20G" {
		t.Errorf("--quota=%q", v)
	}
	if v, _ := flag(c.Args, "pull-timeout"); v != "12h" {
		t.Errorf("--pull-timeout=%q", v)
	}
	if v, _ := flag(c.Args, "request-timeout"); v != "30s" {
		t.Errorf("--request-timeout=%q", v)
	}
	if q, _ := flag(c.Args, "kube-api-qps"); q != "20" {
		t.Errorf("--kube-api-qps=%q, want 20", q)
	}
	if b, _ := flag(c.Args, "kube-api-burst"); b != "40" {
		t.Errorf("--kube-api-burst=%q, want 40", b)
	}
	// 0 turns the client-side limit off: it must reach the puller, not vanish as "empty".
	ds = decode[appsv1.DaemonSet](t, render(t, "--set", "edgePuller.kubeAPIQPS=0").one(t, "DaemonSet", "edgepuller"))
	if q, ok := flag(container(t, &ds.Spec.Template, "edgepuller").Args, "kube-api-qps"); !ok || q != "0" {
		t.Errorf("edgePuller.kubeAPIQPS=0: --kube-api-qps=%q (set %v), want 0", q, ok)
	}

	ds = decode[appsv1.DaemonSet](t, render(t, "--set", "edgePuller.root=/data/barge").one(t, "DaemonSet", "edgepuller"))
	c = container(t, &ds.Spec.Template, "edgepuller")
	if v, _ := flag(c.Args, "root"); v != "/data/barge" || volumeOf(t, &ds.Spec.Template, "root").HostPath.Path != v || mountOf(t, c, "root").MountPath != v {
		t.Errorf("edgePuller.root=/data/barge: --root=%s, not followed by the volume and the mount", v)
	}
	if _, err := renderErr("--set", "edgePuller.root=var/lib/barge"); err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Errorf("a relative edgePuller.root: %v, want an error saying it must be absolute", err)
	}
}

func TestEdgePullerRegistryConfigSecret(t *testing.T) {
	ds := decode[appsv1.DaemonSet](t, render(t, "--set", "edgePuller.registryConfigSecret=regcred").one(t, "DaemonSet", "edgepuller"))
	secretFileMounted(t, &ds.Spec.Template, "registry-config", "regcred")
}

// The push credential is its own Secret, on its own flag; without
// edgePuller.push.secretName uploads are anonymous, and the pull credential
// is never passed as the push one.
func TestEdgePullerPushSecret(t *testing.T) {
	ds := decode[appsv1.DaemonSet](t, render(t, "--set", "edgePuller.registryConfigSecret=regcred,edgePuller.push.secretName=pushcred").one(t, "DaemonSet", "edgepuller"))
	secretFileMounted(t, &ds.Spec.Template, "push-credentials", "pushcred")
	secretFileMounted(t, &ds.Spec.Template, "registry-config", "regcred")

	ds = decode[appsv1.DaemonSet](t, render(t, "--set", "edgePuller.registryConfigSecret=regcred").one(t, "DaemonSet", "edgepuller"))
	if v, ok := flag(container(t, &ds.Spec.Template, "edgepuller").Args, "push-credentials"); ok {
		t.Errorf("without edgePuller.push.secretName the puller gets --push-credentials=%s", v)
	}
}

// secretFileMounted checks that the puller's --flag names the
// .dockerconfigjson key of Secret secret, through a read-only mount.
func secretFileMounted(t *testing.T, tmpl *corev1.PodTemplateSpec, flagName, secret string) {
	t.Helper()
	c := container(t, tmpl, "edgepuller")
	file, ok := flag(c.Args, flagName)
	if !ok {
		t.Fatalf("no --%s", flagName)
	}
	var found bool
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, m.MountPath+"/")
		if !ok {
			continue
		}
		found = true
		if !m.ReadOnly {
			t.Errorf("mount %s is writable", m.MountPath)
		}
		v := volumeOf(t, tmpl, m.Name)
		if v.Secret == nil || v.Secret.SecretName != secret {
			t.Fatalf("--%s=%s is on volume %+v, want Secret %s", flagName, file, v, secret)
		}
		if !slices.ContainsFunc(v.Secret.Items, func(k corev1.KeyToPath) bool { return k.Key == ".dockerconfigjson" && k.Path == rel }) {
			t.Errorf("Secret items %+v: the .dockerconfigjson key is not at %s", v.Secret.Items, rel)
		}
	}
	if !found {
		t.Errorf("--%s=%s is on no mounted volume", flagName, file)
	}
}

func TestRegistry(t *testing.T) {
	t.Run("disabled", func(t *testing.T) {
		objs := render(t, "--set", "registry.enabled=false")
		if len(objs) == 0 {
			t.Fatal("nothing rendered")
		}
		for _, o := range objs {
			if o.GetLabels()["app.kubernetes.io/component"] == "registry" || o.GetKind() == "PersistentVolumeClaim" {
				t.Errorf("registry.enabled=false still renders %s %s", o.GetKind(), o.GetName())
			}
		}
	})
	t.Run("persistence", func(t *testing.T) {
		objs := render(t)
		d := decode[appsv1.Deployment](t, objs.one(t, "Deployment", "registry"))
		pvc := decode[corev1.PersistentVolumeClaim](t, objs.one(t, "PersistentVolumeClaim", "registry"))
		data := volumeOf(t, &d.Spec.Template, "data")
		if data.PersistentVolumeClaim == nil || data.PersistentVolumeClaim.ClaimName != pvc.Name {
			t.Errorf("volume data %+v, want claim %s", data, pvc.Name)
		}
		c := container(t, &d.Spec.Template, "registry")
		if root, _ := flag(c.Args, "root"); root != mountOf(t, c, "data").MountPath {
			t.Errorf("--root=%s is not the data mount", root)
		}
		if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("strategy %s: a ReadWriteOnce volume needs Recreate", d.Spec.Strategy.Type)
		}
		if d.Spec.Template.Spec.AutomountServiceAccountToken == nil || *d.Spec.Template.Spec.AutomountServiceAccountToken {
			t.Error("the registry gets an API token it never uses")
		}

		objs = render(t, "--set", "registry.persistence.enabled=false")
		d = decode[appsv1.Deployment](t, objs.one(t, "Deployment", "registry"))
		if data := volumeOf(t, &d.Spec.Template, "data"); data.EmptyDir == nil || len(objs.find("PersistentVolumeClaim", "")) != 0 {
			t.Errorf("persistence off: volume %+v and %d claims, want an emptyDir and none", data, len(objs.find("PersistentVolumeClaim", "")))
		}

		objs = render(t, "--set", "registry.persistence.existingClaim=mine")
		d = decode[appsv1.Deployment](t, objs.one(t, "Deployment", "registry"))
		if data := volumeOf(t, &d.Spec.Template, "data"); data.PersistentVolumeClaim == nil || data.PersistentVolumeClaim.ClaimName != "mine" || len(objs.find("PersistentVolumeClaim", "")) != 0 {
			t.Errorf("existingClaim: volume %+v, want claim mine and no new claim", data)
		}
	})
	t.Run("htpasswd", func(t *testing.T) {
		d := decode[appsv1.Deployment](t, render(t, "--set", "registry.htpasswd.secretName=hp,registry.htpasswd.secretKey=users").one(t, "Deployment", "registry"))
		c := container(t, &d.Spec.Template, "registry")
		file, _ := flag(c.Args, "htpasswd")
		m := mountOf(t, c, "htpasswd")
		v := volumeOf(t, &d.Spec.Template, "htpasswd")
		if file != m.MountPath+"/users" || v.Secret == nil || v.Secret.SecretName != "hp" {
			t.Errorf("--htpasswd=%s, mount %s, volume %+v: want key users of Secret hp", file, m.MountPath, v)
		}
	})
	t.Run("service", func(t *testing.T) {
		svc := decode[corev1.Service](t, render(t, variants["everything"]...).one(t, "Service", "registry"))
		if svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].NodePort != 30500 || svc.Spec.Ports[0].Port != 5000 {
			t.Errorf("service %+v", svc.Spec)
		}
	})
}

// TestServicesSelectPods checks that each Service selects a rendered pod
// template and that its target ports are named ports of that pod.
func TestServicesSelectPods(t *testing.T) {
	objs := render(t, variants["everything"]...)
	specs := podSpecs(t, objs)
	for _, o := range objs.find("Service", "") {
		svc := decode[corev1.Service](t, o)
		var matched bool
		for _, tmpl := range specs {
			if !selects(svc.Spec.Selector, tmpl.Labels) {
				continue
			}
			matched = true
			for _, p := range svc.Spec.Ports {
				if !slices.ContainsFunc(tmpl.Spec.Containers, func(c corev1.Container) bool {
					return slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.TargetPort.String() })
				}) {
					t.Errorf("Service %s: targetPort %s is no container port", svc.Name, p.TargetPort.String())
				}
			}
		}
		if !matched {
			t.Errorf("Service %s selects no pod (selector %v)", svc.Name, svc.Spec.Selector)
		}
	}
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestEdgePullerDisabled(t *testing.T) {
	for _, o := range render(t, "--set", "edgePuller.enabled=false") {
		if o.GetLabels()["app.kubernetes.io/component"] == "edgepuller" {
			t.Errorf("edgePuller.enabled=false still renders %s %s", o.GetKind(), o.GetName())
		}
	}
}

func TestServiceMonitors(t *testing.T) {
	const api = "monitoring.coreos.com/v1/ServiceMonitor"
	for _, tt := range []struct {
		name string
		args []string
		want int
	}{
		{"auto without the API", nil, 0},
		{"auto with the API", []string{"--api-versions", api}, 2},
		{"disabled with the API", []string{"--api-versions", api, "--set", "metrics.serviceMonitor.enabled=false"}, 0},
		{"enabled without the API", []string{"--set", "metrics.serviceMonitor.enabled=true"}, 2},
		{"no puller", []string{"--api-versions", api, "--set", "edgePuller.enabled=false"}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			objs := render(t, tt.args...)
			sms := objs.find("ServiceMonitor", "")
			if len(sms) != tt.want {
				t.Fatalf("%d ServiceMonitors, want %d", len(sms), tt.want)
			}
			for _, sm := range sms {
				var spec struct {
					Spec struct {
						Selector  struct{ MatchLabels map[string]string }
						Endpoints []struct{ Port string }
					}
				}
				if err := yaml.Unmarshal(sm.raw, &spec); err != nil {
					t.Fatal(err)
				}
				var found bool
				for _, o := range objs.find("Service", "") {
					svc := decode[corev1.Service](t, o)
					if selects(spec.Spec.Selector.MatchLabels, svc.Labels) {
						found = true
						if len(spec.Spec.Endpoints) != 1 || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == spec.Spec.Endpoints[0].Port }) {
							t.Errorf("ServiceMonitor %s endpoints %+v: no such port on Service %s", sm.GetName(), spec.Spec.Endpoints, svc.Name)
						}
					}
				}
				if !found {
					t.Errorf("ServiceMonitor %s selects no Service", sm.GetName())
				}
			}
		})
	}
	if _, err := renderErr("--set", "metrics.serviceMonitor.enabled=yes"); err == nil || !strings.Contains(err.Error(), "auto, true or false") {
		t.Errorf("enabled=yes: %v, want an error naming the choices", err)
	}
}

func TestCRDs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s/crds (run make generate): %v", chartDir, err)
	}
	var want []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd struct{ Metadata struct{ Name string } }
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want = append(want, crd.Metadata.Name)
	}
	sort.Strings(want)

	var got []string
	for _, o := range render(t, "--include-crds").find("CustomResourceDefinition", "") {
		got = append(got, o.GetName())
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("--include-crds renders %v, want the CRDs in crds/: %v", got, want)
	}
	for _, name := range []string{"inferencemodels.barge.dev", "datasets.barge.dev", "nodeartifacts.barge.dev"} {
		if !slices.Contains(got, name) {
			t.Errorf("CRD %s is missing", name)
		}
	}
	if n := len(render(t).find("CustomResourceDefinition", "")); n != 0 {
		t.Errorf("%d CRDs rendered as templates: Helm must install them from crds/ only", n)
	}
}

// TestProbes checks that every container has both probes and that a probe's
// named port is one of the container's ports.
func TestProbes(t *testing.T) {
	for workload, tmpl := range podSpecs(t, render(t, variants["everything"]...)) {
		for _, c := range tmpl.Spec.Containers {
			for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if p == nil {
					t.Errorf("%s/%s: no %s probe", workload, c.Name, kind)
					continue
				}
				var port intstr.IntOrString
				switch {
				case p.HTTPGet != nil:
					port = p.HTTPGet.Port
				case p.TCPSocket != nil:
					port = p.TCPSocket.Port
				default:
					continue
				}
				if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
					return cp.Name == port.String() || cp.ContainerPort == port.IntVal
				}) {
					t.Errorf("%s/%s: %s probe on port %s, which the container does not declare", workload, c.Name, kind, port.String())
				}
			}
		}
	}
}

// markerRules reads +kubebuilder:rbac markers as "group resource verb"
// triples, the form rbacRules gives.
func markerRules(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^// \+kubebuilder:rbac:(.*)$`).FindAllStringSubmatch(string(b), -1) {
		fields := map[string][]string{}
		for _, kv := range strings.Split(m[1], ",") {
			k, v, _ := strings.Cut(kv, "=")
			fields[k] = strings.Split(strings.Trim(v, `"`), ";")
		}
		out = append(out, triples(fields["groups"][0], fields["resources"], fields["verbs"]...)...)
	}
	if len(out) == 0 {
		t.Fatalf("no +kubebuilder:rbac markers in %s", file)
	}
	return out
}

// secretData returns the decoded data of a rendered Secret.
func secretData(t *testing.T, objs objects, name string) map[string][]byte {
	t.Helper()
	for _, o := range objs.find("Secret", "") {
		if o.GetName() == name {
			return decode[corev1.Secret](t, o).Data
		}
	}
	t.Fatalf("no Secret %s", name)
	return nil
}

func configMapData(t *testing.T, objs objects, name string) map[string]string {
	t.Helper()
	for _, o := range objs.find("ConfigMap", "") {
		if o.GetName() == name {
			return decode[corev1.ConfigMap](t, o).Data
		}
	}
	t.Fatalf("no ConfigMap %s", name)
	return nil
}

// secretVolumesAre0400: every Secret volume of a pod template is mounted
// readable by its owner only.
func secretVolumesAre0400(t *testing.T, where string, tmpl *corev1.PodTemplateSpec) {
	t.Helper()
	for _, v := range tmpl.Spec.Volumes {
		if v.Secret == nil {
			continue
		}
		if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o400 {
			t.Errorf("%s: Secret volume %s has defaultMode %v, want 0400", where, v.Name, deref(v.Secret.DefaultMode))
		}
	}
}

// TestRegistrySecureByDefault: with default values the chart's registry
// serves HTTPS only, wants a user for every request, keeps deletes off, and
// every credential is mounted 0400. The generated material is then used
// with the real registry: the certificate verifies against the published CA
// for the Service's name, the push user pushes, the pull user only pulls.
func TestRegistrySecureByDefault(t *testing.T) {
	objs := render(t)
	full := release + "-barge-registry"
	d := decode[appsv1.Deployment](t, objs.one(t, "Deployment", "registry"))
	tmpl := &d.Spec.Template
	c := container(t, tmpl, "registry")
	for _, f := range []string{"insecure-listen", "enable-delete"} {
		if _, ok := flag(c.Args, f); ok {
			t.Errorf("--%s with default values", f)
		}
	}
	files := map[string]string{} // flag → Secret key it reads
	for flagName, volume := range map[string]string{"tls-cert": "tls", "tls-key": "tls", "htpasswd": "htpasswd", "htpasswd-readonly": "htpasswd-readonly"} {
		file, ok := flag(c.Args, flagName)
		if !ok {
			t.Fatalf("no --%s", flagName)
		}
		rel, ok := strings.CutPrefix(file, mountOf(t, c, volume).MountPath+"/")
		v := volumeOf(t, tmpl, volume)
		if !ok || v.Secret == nil || !slices.ContainsFunc(v.Secret.Items, func(k corev1.KeyToPath) bool { return k.Path == rel }) {
			t.Fatalf("--%s=%s is not a key of the Secret on volume %s (%+v)", flagName, file, volume, v)
		}
		for _, k := range v.Secret.Items {
			if k.Path == rel {
				files[flagName] = v.Secret.SecretName + "/" + k.Key
			}
		}
	}
	secretVolumesAre0400(t, "registry", tmpl)
	ds := decode[appsv1.DaemonSet](t, objs.one(t, "DaemonSet", "edgepuller"))
	secretVolumesAre0400(t, "edgepuller", &ds.Spec.Template)

	read := func(ref string) []byte {
		name, key, _ := strings.Cut(ref, "/")
		b, ok := secretData(t, objs, name)[key]
		if !ok {
			t.Fatalf("Secret %s has no key %s", name, key)
		}
		return b
	}
	dir := t.TempDir()
	paths := map[string]string{}
	for flagName, ref := range files {
		paths[flagName] = filepath.Join(dir, flagName)
		if err := os.WriteFile(paths[flagName], read(ref), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca := configMapData(t, objs, full+"-ca")["ca.crt"]
	if tlsCA := string(secretData(t, objs, full+"-tls")["ca.crt"]); strings.TrimSpace(tlsCA) != strings.TrimSpace(ca) {
		t.Error("the CA ConfigMap differs from the CA the certificate was signed by")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(ca)) {
		t.Fatal("the CA ConfigMap holds no certificate")
	}
	host := full + "." + namespace + ".svc:5000"
	// The names pullers (the Service) and a port-forward (localhost) use.
	block, _ := pem.Decode(read(files["tls-cert"]))
	if block == nil {
		t.Fatal("tls.crt holds no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{full, full + "." + namespace + ".svc", full + "." + namespace + ".svc.cluster.local", "localhost", "127.0.0.1"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("certificate for %s: %v", name, err)
		}
	}

	reg, err := registry.Start(context.Background(), registry.Options{
		Addr: "127.0.0.1:0", TLSCert: paths["tls-cert"], TLSKey: paths["tls-key"],
		Htpasswd: paths["htpasswd"], HtpasswdReadOnly: paths["htpasswd-readonly"],
	})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	// Reach the registry by the Service's name, as pullers do.
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, reg.Addr())
		},
	}
	defer tr.CloseIdleConnections()
	repo := func(user, password string) *remote.Repository {
		r, err := remote.NewRepository(host + "/models/m")
		if err != nil {
			t.Fatal(err)
		}
		r.Client = &auth.Client{Client: &http.Client{Transport: tr}, Credential: auth.StaticCredential(host, auth.Credential{Username: user, Password: password})}
		return r
	}
	users := secretData(t, objs, full+"-auth")
	pushed, err := oras.PushBytes(context.Background(), repo(string(users["push-username"]), string(users["push-password"])), "text/plain", []byte("w"))
	if err != nil {
		t.Fatalf("push as the generated push user, TLS verified for %s: %v", host, err)
	}

	// The pullers' credentials are the pull user's, for the Service address.
	var cfg struct {
		Auths map[string]struct{ Username, Password, Auth string } `json:"auths"`
	}
	if err := json.Unmarshal(secretData(t, objs, full+"-pull")[".dockerconfigjson"], &cfg); err != nil {
		t.Fatal(err)
	}
	pull, ok := cfg.Auths[host]
	if !ok || pull.Username != "pull" {
		t.Fatalf("pull Secret auths %v, want the pull user for %s", keys2(cfg.Auths), host)
	}
	if b, _ := base64.StdEncoding.DecodeString(pull.Auth); string(b) != pull.Username+":"+pull.Password {
		t.Error("the auth field does not match username and password")
	}
	if _, err := content.FetchAll(context.Background(), repo(pull.Username, pull.Password), pushed); err != nil {
		t.Errorf("pull with the pullers' credentials: %v", err)
	}
	if _, err := oras.PushBytes(context.Background(), repo(pull.Username, pull.Password), "text/plain", []byte("evil")); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("push with the pullers' credentials: %v, want 403", err)
	}
}

func keys2[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// TestRegistryPullCredentials: pullers use the chart's read-only pull
// Secret and trust its CA unless told otherwise, the controller trusts the
// CA too, and neither ever mounts the registry's TLS Secret, whose key a
// node could then read.
func TestRegistryPullCredentials(t *testing.T) {
	full := release + "-barge-registry"
	for _, tc := range []struct {
		name       string
		args       []string
		pullSecret string // what the pullers mount; "" none
		ca         string // ConfigMap trusted; "" none
	}{
		{"defaults", nil, full + "-pull", full + "-ca"},
		{"own puller credentials", []string{"--set", "edgePuller.registryConfigSecret=regcred"}, "regcred", full + "-ca"},
		{"no auth", []string{"--set", "registry.auth.enabled=false"}, "", full + "-ca"},
		{"no TLS", []string{"--set", "registry.tls.enabled=false"}, full + "-pull", ""},
		{"cert-manager certificate, public CA", []string{"--set", "registry.tls.secretName=registry-cert"}, full + "-pull", ""},
		{"cert-manager certificate, trust-manager bundle", []string{"--set", "registry.tls.secretName=registry-cert,registry.tls.caConfigMap=bundle"}, full + "-pull", "bundle"},
		{"own users without pull credentials", []string{"--set", "registry.htpasswd.secretName=users"}, "", full + "-ca"},
		{"own users and pull credentials", []string{"--set", "registry.htpasswd.secretName=users,registry.auth.pullSecretName=pullcred"}, "pullcred", full + "-ca"},
		{"no registry", []string{"--set", "registry.enabled=false"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, tc.args...)
			ds := decode[appsv1.DaemonSet](t, objs.one(t, "DaemonSet", "edgepuller"))
			c := container(t, &ds.Spec.Template, "edgepuller")
			_, hasFlag := flag(c.Args, "registry-config")
			if hasFlag != (tc.pullSecret != "") {
				t.Errorf("--registry-config present %v, want credentials %q", hasFlag, tc.pullSecret)
			}
			if tc.pullSecret != "" {
				if v := volumeOf(t, &ds.Spec.Template, "registry-config"); v.Secret == nil || v.Secret.SecretName != tc.pullSecret {
					t.Errorf("registry-config volume %+v, want Secret %s", v, tc.pullSecret)
				}
			}
			secretVolumesAre0400(t, "edgepuller", &ds.Spec.Template)
			d := decode[appsv1.Deployment](t, objs.one(t, "Deployment", "controller"))
			for where, tmpl := range map[string]*corev1.PodTemplateSpec{"edgepuller": &ds.Spec.Template, "controller": &d.Spec.Template} {
				c := tmpl.Spec.Containers[0]
				trusted := ""
				for _, v := range tmpl.Spec.Volumes {
					if v.ConfigMap != nil && v.Name == "registry-ca" {
						trusted = v.ConfigMap.Name
						dir := mountOf(t, c, "registry-ca").MountPath
						if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
							return e.Name == "SSL_CERT_DIR" && strings.HasPrefix(e.Value, dir+":") && strings.HasSuffix(e.Value, ":/etc/ssl/certs")
						}) {
							t.Errorf("%s: SSL_CERT_DIR does not add %s to the system's CAs: %+v", where, dir, c.Env)
						}
					}
					if v.Secret != nil && strings.HasSuffix(v.Secret.SecretName, "-tls") || v.Secret != nil && v.Secret.SecretName == "registry-cert" {
						t.Errorf("%s mounts the registry's TLS Secret %s", where, v.Secret.SecretName)
					}
				}
				if trusted != tc.ca {
					t.Errorf("%s trusts ConfigMap %q, want %q", where, trusted, tc.ca)
				}
			}
		})
	}
}

// TestRegistryValues: each registry value turns its part on or off, and
// the registry listens beyond loopback insecurely only when told so.
func TestRegistryValues(t *testing.T) {
	full := release + "-barge-registry"
	for _, tc := range []struct {
		name  string
		args  []string
		check func(t *testing.T, objs objects, c corev1.Container, tmpl *corev1.PodTemplateSpec)
	}{
		{"auth off means --insecure-listen and no users", []string{"--set", "registry.auth.enabled=false"}, func(t *testing.T, objs objects, c corev1.Container, _ *corev1.PodTemplateSpec) {
			if _, ok := flag(c.Args, "insecure-listen"); !ok {
				t.Error("no --insecure-listen: barge serve would refuse to start")
			}
			if _, ok := flag(c.Args, "htpasswd"); ok {
				t.Error("--htpasswd with auth off")
			}
			if n := len(objs.find("Secret", "registry")); n != 2 {
				t.Errorf("%d registry Secrets, want only the TLS one and the upload secret", n)
			}
		}},
		{"TLS off means --insecure-listen", []string{"--set", "registry.tls.enabled=false"}, func(t *testing.T, objs objects, c corev1.Container, _ *corev1.PodTemplateSpec) {
			if _, ok := flag(c.Args, "insecure-listen"); !ok {
				t.Error("no --insecure-listen")
			}
			if _, ok := flag(c.Args, "tls-cert"); ok {
				t.Error("--tls-cert with TLS off")
			}
			if len(objs.find("ConfigMap", "registry")) != 0 {
				t.Error("a CA ConfigMap with TLS off")
			}
		}},
		{"certificate from a Secret", []string{"--set", "registry.tls.secretName=registry-cert"}, func(t *testing.T, objs objects, _ corev1.Container, tmpl *corev1.PodTemplateSpec) {
			if v := volumeOf(t, tmpl, "tls"); v.Secret == nil || v.Secret.SecretName != "registry-cert" {
				t.Errorf("tls volume %+v, want Secret registry-cert", v)
			}
			for _, o := range objs.find("Secret", "registry") {
				if o.GetName() == full+"-tls" {
					t.Error("a generated certificate besides the given one")
				}
			}
		}},
		{"deletes on", []string{"--set", "registry.enableDelete=true"}, func(t *testing.T, _ objects, c corev1.Container, _ *corev1.PodTemplateSpec) {
			if _, ok := flag(c.Args, "enable-delete"); !ok {
				t.Error("no --enable-delete")
			}
		}},
		{"own read-write and read-only users", []string{"--set", "registry.htpasswd.secretName=rw,registry.htpasswd.readOnlySecretName=ro,registry.htpasswd.readOnlySecretKey=users"}, func(t *testing.T, objs objects, c corev1.Container, tmpl *corev1.PodTemplateSpec) {
			file, _ := flag(c.Args, "htpasswd-readonly")
			if v := volumeOf(t, tmpl, "htpasswd-readonly"); v.Secret == nil || v.Secret.SecretName != "ro" || file != mountOf(t, c, "htpasswd-readonly").MountPath+"/users" {
				t.Errorf("--htpasswd-readonly=%s on volume %+v, want key users of Secret ro", file, v)
			}
			for _, o := range objs.find("Secret", "registry") {
				if o.GetName() == full+"-auth" || o.GetName() == full+"-pull" {
					t.Errorf("generated %s besides the given users", o.GetName())
				}
			}
		}},
		{"pull Secret copied to namespaces, extra hosts", []string{"--set", "registry.auth.pullSecretNamespaces={default,ml},registry.auth.extraHosts={10.0.0.5:30500}"}, func(t *testing.T, objs objects, _ corev1.Container, _ *corev1.PodTemplateSpec) {
			var in []string
			var configs []string
			for _, o := range objs.find("Secret", "registry") {
				if o.GetName() == full+"-pull" {
					in = append(in, o.GetNamespace())
					configs = append(configs, string(decode[corev1.Secret](t, o).Data[".dockerconfigjson"]))
				}
			}
			slices.Sort(in)
			if !slices.Equal(in, []string{namespace, "default", "ml"}) {
				t.Errorf("pull Secret in %v", in)
			}
			for _, cfg := range configs {
				if cfg != configs[0] || !strings.Contains(cfg, `"10.0.0.5:30500"`) || !strings.Contains(cfg, full+"."+namespace+".svc:5000") {
					t.Errorf("pull Secret %s: want the same credentials for both hosts everywhere", cfg)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, tc.args...)
			d := decode[appsv1.Deployment](t, objs.one(t, "Deployment", "registry"))
			tc.check(t, objs, container(t, &d.Spec.Template, "registry"), &d.Spec.Template)
		})
	}
	if _, err := renderErr("--set", "registry.htpasswd.secretName=rw,registry.auth.pullSecretNamespaces={default}"); err == nil || !strings.Contains(err.Error(), "registry.auth.pullSecretName") {
		t.Errorf("copies of a pull Secret the chart does not make: %v, want an error naming registry.auth.pullSecretName", err)
	}
}

// TestRegistryGeneratedSecretsAreRandom: two installs get different
// passwords and CAs (nothing is a constant in the chart).
func TestRegistryGeneratedSecretsAreRandom(t *testing.T) {
	full := release + "-barge-registry"
	a, b := render(t), render(t)
	for _, ref := range []string{"-auth/push-password", "-auth/pull-password", "-tls/tls.key", "-tls/ca.crt", "-upload/secret"} {
		name, key, _ := strings.Cut(ref, "/")
		x, y := secretData(t, a, full+name)[key], secretData(t, b, full+name)[key]
		if len(x) < 32 || string(x) == string(y) {
			t.Errorf("%s%s: %d bytes, the same in two installs: %v", full, ref, len(x), string(x) == string(y))
		}
	}
	if p := secretData(t, a, full+"-auth")["push-password"]; len(p) != 32 {
		t.Errorf("push password of %d characters, want 32", len(p))
	}
}

// TestRegistryNetworkPolicy: ingress to the registry pods only on its port,
// from the chart's pullers and controller (their rendered pods match) and
// the peers given in registry.networkPolicy.from.
func TestRegistryNetworkPolicy(t *testing.T) {
	s := kruntime.NewScheme()
	if err := networkingv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	strictNet := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, s, s, kjson.SerializerOptions{Yaml: true, Strict: true})
	objs := render(t, "--set-json", `registry.networkPolicy.from=[{"ipBlock":{"cidr":"10.20.0.0/16"}}]`)
	var np networkingv1.NetworkPolicy
	if _, _, err := strictNet.Decode(objs.one(t, "NetworkPolicy", "registry").raw, nil, &np); err != nil {
		t.Fatal(err)
	}
	specs := podSpecs(t, objs)
	reg := specs[release+"-barge-registry"]
	if !selects(np.Spec.PodSelector.MatchLabels, reg.Labels) || !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Fatalf("policy selects %v, types %v: want the registry pods, ingress", np.Spec.PodSelector.MatchLabels, np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].Ports) != 1 || np.Spec.Ingress[0].Ports[0].Port.IntValue() != int(container(t, reg, "registry").Ports[0].ContainerPort) {
		t.Fatalf("ingress %+v: want one rule on the registry's port only", np.Spec.Ingress)
	}
	from := np.Spec.Ingress[0].From
	for _, name := range []string{release + "-barge-edgepuller", release + "-barge-controller"} {
		if !slices.ContainsFunc(from, func(p networkingv1.NetworkPolicyPeer) bool {
			return p.PodSelector != nil && p.NamespaceSelector == nil && selects(p.PodSelector.MatchLabels, specs[name].Labels)
		}) {
			t.Errorf("pods of %s are not admitted: %+v", name, from)
		}
	}
	if !slices.ContainsFunc(from, func(p networkingv1.NetworkPolicyPeer) bool {
		return p.IPBlock != nil && p.IPBlock.CIDR == "10.20.0.0/16"
	}) {
		t.Errorf("the extra peer is missing: %+v", from)
	}
	if len(render(t, "--set", "registry.networkPolicy.enabled=false").find("NetworkPolicy", "")) != 0 {
		t.Error("a NetworkPolicy with registry.networkPolicy.enabled=false")
	}
}

// TestRegistrySecretsSurviveUpgrade installs the chart into a real API
// server with helm and upgrades it: the generated passwords, certificate
// and upload secret stay (lookup reads them back), so pullers' credentials
// and uploads in flight do not break on every upgrade; a change of the
// certificate's names makes a new one, and the passwords still stay. The
// pullers' generated peer CA and certificate stay too.
func TestRegistrySecretsSurviveUpgrade(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t)
	full := release + "-barge-registry"
	deploy := func(verb string, args ...string) {
		t.Helper()
		base := []string{verb, release, chartDir, "--kubeconfig", kubeconfig, "--namespace", ns, "--skip-crds"}
		if _, err := helm(append(base, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	secret := func(name string) map[string][]byte {
		t.Helper()
		var s corev1.Secret
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
			t.Fatal(err)
		}
		return s.Data
	}
	peers := []string{"--set", "edgePuller.peers.enabled=true"}
	peerTLS := release + "-barge-edgepuller-peer-tls"
	deploy("install", peers...)
	users, certs := secret(full+"-auth"), secret(full+"-tls")
	pull := secret(full + "-pull")
	upload := secret(full + "-upload")
	peerCerts := secret(peerTLS)

	deploy("upgrade", peers...)
	if !maps.EqualFunc(users, secret(full+"-auth"), bytes.Equal) || !maps.EqualFunc(pull, secret(full+"-pull"), bytes.Equal) {
		t.Error("an upgrade changed the generated users or the pull credentials")
	}
	if !maps.EqualFunc(certs, secret(full+"-tls"), bytes.Equal) {
		t.Error("an upgrade changed the generated certificate")
	}
	if !maps.EqualFunc(upload, secret(full+"-upload"), bytes.Equal) {
		t.Error("an upgrade changed the upload secret: uploads in flight through the old replicas would fail on the new ones")
	}
	if !maps.EqualFunc(peerCerts, secret(peerTLS), bytes.Equal) {
		t.Error("an upgrade changed the generated peer CA or certificate: pullers not yet restarted would refuse the new ones")
	}

	deploy("upgrade", append(peers, "--set", "registry.tls.extraDNSNames={registry.edge.example}")...)
	if maps.EqualFunc(certs, secret(full+"-tls"), bytes.Equal) {
		t.Error("a new DNS name did not make a new certificate")
	}
	if !maps.EqualFunc(users, secret(full+"-auth"), bytes.Equal) {
		t.Error("a certificate change changed the users")
	}
}

// TestDefaultNodeQuota: a node's store has a quota out of the box, so one
// large artifact cannot fill an edge node's disk; an empty value turns it off.
func TestDefaultNodeQuota(t *testing.T) {
	ds := decode[appsv1.DaemonSet](t, render(t).one(t, "DaemonSet", "edgepuller"))
	if v, ok := flag(container(t, &ds.Spec.Template, "edgepuller").Args, "quota"); !ok || v != "20G" {
		t.Errorf("default --quota=%q (present %v), want 20G", v, ok)
	}
	ds = decode[appsv1.DaemonSet](t, render(t, "--set", "edgePuller.quota=").one(t, "DaemonSet", "edgepuller"))
	if v, ok := flag(container(t, &ds.Spec.Template, "edgepuller").Args, "quota"); ok {
		t.Errorf("edgePuller.quota empty still passes --quota=%q", v)
	}
}

// TestControllerFlags: the controller's bounds and allow-list reach its
// flags, and it knows its own ServiceAccount for the messages that name it.
func TestControllerFlags(t *testing.T) {
	objs := render(t)
	d := decode[appsv1.Deployment](t, objs.one(t, "Deployment", "controller"))
	c := container(t, &d.Spec.Template, "controller")
	sa := objs.one(t, "ServiceAccount", "controller")
	for name, want := range map[string]string{
		"service-account":       namespace + "/" + sa.GetName(),
		"registry-timeout":      "30s",
		"reconcile-timeout":     "2m",
		"deletion-grace-period": "10m",
		"edge-root":             "/var/lib/barge",
		"kube-api-qps":          "200",
		"kube-api-burst":        "400",
		"concurrent-reconciles": "16",
	} {
		if got, ok := flag(c.Args, name); !ok || got != want {
			t.Errorf("--%s=%q (present %v), want %q", name, got, ok, want)
		}
	}
	if v, ok := flag(c.Args, "allowed-registries"); ok {
		t.Errorf("--allowed-registries=%q by default; want any registry", v)
	}
	d = decode[appsv1.Deployment](t, render(t, "--set", "edgePuller.root=/data/barge").one(t, "Deployment", "controller"))
	if v, _ := flag(container(t, &d.Spec.Template, "controller").Args, "edge-root"); v != "/data/barge" {
		t.Errorf("--edge-root=%q, want edgePuller.root /data/barge: edge servers mount the pullers' files", v)
	}
	d = decode[appsv1.Deployment](t, render(t, "--set", "controller.allowedRegistries={registry.example.com,10.0.0.5:5000}").one(t, "Deployment", "controller"))
	if v, _ := flag(container(t, &d.Spec.Template, "controller").Args, "allowed-registries"); v != "registry.example.com,10.0.0.5:5000" {
		t.Errorf("--allowed-registries=%q, want registry.example.com,10.0.0.5:5000", v)
	}
	if v, ok := flag(c.Args, "local-dataset-roots"); ok {
		t.Errorf("--local-dataset-roots=%q by default; want any directory outside the edge root", v)
	}
	d = decode[appsv1.Deployment](t, render(t, "--set", "controller.localDatasetRoots={/data,/srv/sensors}").one(t, "Deployment", "controller"))
	if v, _ := flag(container(t, &d.Spec.Template, "controller").Args, "local-dataset-roots"); v != "/data,/srv/sensors" {
		t.Errorf("--local-dataset-roots=%q, want /data,/srv/sensors", v)
	}
}

// secretRules are the rules of the pull secrets marker in controllers/resolve.go.
func secretRules(t *testing.T) []string {
	rules := markerRules(t, filepath.Join(chartDir, "..", "..", "controllers", "resolve.go"))
	sort.Strings(rules)
	return rules
}

// TestControllerSecretAccess: by default the controller may get Secrets in
// the release namespace only, through a Role; each namespace of
// controller.secretAccess.namespaces adds one; cluster-wide get is opt-in;
// nothing grants list or watch of Secrets.
func TestControllerSecretAccess(t *testing.T) {
	want := secretRules(t)
	if !slices.Equal(want, []string{" secrets get"}) {
		t.Fatalf("the pull secrets marker grants %v; the chart's Roles are written for get on secrets only", want)
	}
	for _, tt := range []struct {
		name        string
		args        []string
		roles       []string // namespaces with a Role
		clusterWide bool
	}{
		{name: "default", roles: []string{namespace}},
		{name: "more namespaces", args: []string{"--set", "controller.secretAccess.namespaces={team-b,team-a," + namespace + "}"}, roles: []string{namespace, "team-a", "team-b"}},
		{name: "cluster", args: []string{"--set", "controller.secretAccess.scope=cluster"}, clusterWide: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			objs := render(t, tt.args...)
			sa := objs.one(t, "ServiceAccount", "controller")
			for _, o := range objs {
				if o.GetKind() != "Role" && o.GetKind() != "ClusterRole" {
					continue
				}
				var rules []rbacv1.PolicyRule
				if o.GetKind() == "Role" {
					rules = decode[rbacv1.Role](t, o).Rules
				} else {
					rules = decode[rbacv1.ClusterRole](t, o).Rules
				}
				for _, r := range rbacRules(t, o.GetKind()+" "+o.GetName(), rules) {
					if strings.Contains(r, " secrets ") && o.GetLabels()["app.kubernetes.io/component"] != "controller-secrets" {
						t.Errorf("%s %s grants %q", o.GetKind(), o.GetName(), r)
					}
				}
			}
			var got []string
			for _, o := range objs.find("Role", "controller-secrets") {
				role := decode[rbacv1.Role](t, o)
				if r := rbacRules(t, "Role "+role.Name, role.Rules); !slices.Equal(r, want) {
					t.Errorf("Role %s/%s grants %v, want %v", role.Namespace, role.Name, r, want)
				}
				got = append(got, role.Namespace)
			}
			sort.Strings(got)
			if !slices.Equal(got, tt.roles) {
				t.Errorf("Roles for pull secrets in %v, want %v", got, tt.roles)
			}
			var bound []string
			for _, o := range objs.find("RoleBinding", "controller-secrets") {
				b := decode[rbacv1.RoleBinding](t, o)
				if b.RoleRef.Kind != "Role" || len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != sa.GetName() || b.Subjects[0].Namespace != namespace {
					t.Errorf("RoleBinding %s/%s: roleRef %+v subjects %+v, want the controller's ServiceAccount", b.Namespace, b.Name, b.RoleRef, b.Subjects)
				}
				bound = append(bound, b.Namespace)
			}
			sort.Strings(bound)
			if !slices.Equal(bound, tt.roles) {
				t.Errorf("RoleBindings for pull secrets in %v, want %v", bound, tt.roles)
			}
			cluster := objs.find("ClusterRole", "controller-secrets")
			if got := len(cluster) == 1; got != tt.clusterWide {
				t.Fatalf("%d ClusterRoles for pull secrets; want cluster-wide %v", len(cluster), tt.clusterWide)
			}
			if tt.clusterWide {
				cr := decode[rbacv1.ClusterRole](t, cluster[0])
				if r := rbacRules(t, "ClusterRole "+cr.Name, cr.Rules); !slices.Equal(r, want) {
					t.Errorf("ClusterRole %s grants %v, want %v", cr.Name, r, want)
				}
				b := decode[rbacv1.ClusterRoleBinding](t, objs.one(t, "ClusterRoleBinding", "controller-secrets"))
				if b.RoleRef.Name != cr.Name || len(b.Subjects) != 1 || b.Subjects[0].Name != sa.GetName() || b.Subjects[0].Namespace != namespace {
					t.Errorf("ClusterRoleBinding %s: roleRef %+v subjects %+v", b.Name, b.RoleRef, b.Subjects)
				}
			}
		})
	}
	if _, err := renderErr("--set", "controller.secretAccess.scope=everything"); err == nil || !strings.Contains(err.Error(), `controller.secretAccess.scope "everything": use namespaces`) {
		t.Errorf("an unknown scope: %v", err)
	}
}

// TestControllerRegistryConfig: the controller holds the chart registry's
// read-only pull credentials by default (for objects without
// spec.pullSecretRef), readable by its non-root user through the pod's
// fsGroup and mode 0440 and by no other user; its own Secret replaces them,
// and without the chart's registry it holds none.
func TestControllerRegistryConfig(t *testing.T) {
	for _, tc := range []struct {
		name, secret string
		args         []string
	}{
		{"defaults", release + "-barge-registry-pull", nil},
		{"own Secret", "ctrlcred", []string{"--set", "controller.registryConfigSecret=ctrlcred"}},
		{"no registry", "", []string{"--set", "registry.enabled=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decode[appsv1.Deployment](t, render(t, tc.args...).one(t, "Deployment", "controller"))
			tmpl := &d.Spec.Template
			c := container(t, tmpl, "controller")
			file, ok := flag(c.Args, "registry-config")
			if ok != (tc.secret != "") {
				t.Fatalf("--registry-config present %v, want credentials %q", ok, tc.secret)
			}
			if !ok {
				return
			}
			v := volumeOf(t, tmpl, "registry-config")
			if v.Secret == nil || v.Secret.SecretName != tc.secret || file != mountOf(t, c, "registry-config").MountPath+"/config.json" {
				t.Errorf("--registry-config=%s on volume %+v, want config.json of Secret %s", file, v, tc.secret)
			}
			psc := tmpl.Spec.SecurityContext
			if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o440 || psc.FSGroup == nil || psc.RunAsGroup == nil || *psc.FSGroup != *psc.RunAsGroup {
				t.Errorf("defaultMode %v, fsGroup %v, runAsGroup %v: want 0440 readable through the pod's own group", deref(v.Secret.DefaultMode), deref(psc.FSGroup), deref(psc.RunAsGroup))
			}
		})
	}
}
