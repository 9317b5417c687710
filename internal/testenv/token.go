package testenv

import (
	"context"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// NodeNameExtra is the user-info extra that the API server sets from a
// service-account token bound to a Pod on a Node: the node's name.
const NodeNameExtra = "authentication.kubernetes.io/node-name"

// PodToken returns a configuration that reaches the API server as the
// service account namespace/serviceAccount with the token a kubelet would
// mount in a Pod on node: a TokenRequest bound to a Pod bound to the Node,
// so that the API server puts the node's name into the token, and checks on
// every request that the Pod and the Node still exist. The Node, the service
// account and a Pod are created as needed (no kubelet runs them).
func (e *Env) PodToken(ctx context.Context, namespace, serviceAccount, node string) (*rest.Config, error) {
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return nil, err
	}
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		n, err = cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", node, err)
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("namespace %s: %w", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount, Namespace: namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("service account %s/%s: %w", namespace, serviceAccount, err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: serviceAccount + "-", Namespace: namespace},
		Spec: corev1.PodSpec{
			NodeName:           n.Name,
			ServiceAccountName: serviceAccount,
			Containers:         []corev1.Container{{Name: "main", Image: "barge"}},
		},
	}
	pod, err = cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("pod of %s/%s on node %s: %w", namespace, serviceAccount, node, err)
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	tr, err = cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, tr, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token of %s/%s bound to pod %s: %w", namespace, serviceAccount, pod.Name, err)
	}
	return e.TokenConfig(tr.Status.Token), nil
}

// TokenConfig reaches the API server with a bearer token and nothing else of
// the admin's credentials.
func (e *Env) TokenConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            e.Config.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.Config.CAData, CAFile: e.Config.CAFile, ServerName: e.Config.ServerName},
		QPS:             e.Config.QPS,
		Burst:           e.Config.Burst,
	}
}
