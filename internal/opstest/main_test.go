package opstest_test

import (
	"os"
	"testing"

	"github.com/errand-dev/errand/errandtest"
)

func TestMain(m *testing.M) { os.Exit(errandtest.Main(m)) }
