package v1alpha1_test

import (
	"os"
	"testing"

	"github.com/bargeml/barge/internal/testenv"
)

// env is a real kube-apiserver and etcd with the CRDs of charts/barge/crds: the
// schema, defaults and CEL rules under test are the ones users get.
var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Run(m, &env)) }
