"""Python layers used by the foundation tests (Caffe imports them by module name)."""
import caffe


class SquareLayer(caffe.Layer):
    """y = x * x elementwise; backward dy/dx = 2x."""

    def setup(self, bottom, top):
        if len(bottom) != 1:
            raise Exception("SquareLayer takes one bottom")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data ** 2

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * bottom[0].data * top[0].diff


class IterationDataLayer(caffe.Layer):
    """Batches that are a function of the iteration only (seeded), like the project's data layers:
    ``x`` (N, 4) and target ``y = x @ [1, -2, 0.5, 3]``; ``param_str`` "nan_at=K" makes batch K NaN."""

    def setup(self, bottom, top):
        self.iteration = 0
        self.nan_at = int(self.param_str.split("=")[1]) if self.param_str.startswith("nan_at=") else -1

    def set_iteration(self, iteration):
        self.iteration = iteration

    def reshape(self, bottom, top):
        top[0].reshape(8, 4)
        top[1].reshape(8, 1)

    def forward(self, bottom, top):
        import numpy as np

        rng = np.random.default_rng(1000 + self.iteration)
        x = rng.normal(size=(8, 4)).astype(np.float32)
        if self.iteration == self.nan_at:
            x[:] = np.nan
        top[0].data[...] = x
        top[1].data[...] = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype=np.float32)
        self.iteration += 1

    def backward(self, top, propagate_down, bottom):
        pass


class ConstantGradientLoss(caffe.Layer):
    """loss = sum(x); d loss / dx = 1: an SGD step then moves each weight by exactly -lr * d(sum x)/dw."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(1)

    def forward(self, bottom, top):
        top[0].data[0] = bottom[0].data.sum()

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff[0]


class JitteredGroundTruthDetections(caffe.Layer):
    """A stand-in detector for evaluation tests: ``DetectionOutput``-format rows made from the
    ``AnnotatedData`` label rows of the batch (``[item, label, instance, x1, y1, x2, y2, difficult]``):
    most objects found with a jittered box, some twice, some missed, plus false positives. Seeded by
    the forward count, so a run is reproducible."""

    def setup(self, bottom, top):
        self.calls = 0

    def reshape(self, bottom, top):
        top[0].reshape(1, 1, 1, 7)   # the real size is set in forward (as DetectionOutput does)

    def forward(self, bottom, top):
        import numpy as np

        rng = np.random.default_rng(self.calls)
        self.calls += 1
        rows = []
        for item, label, _, x1, y1, x2, y2, _ in bottom[0].data.reshape(-1, 8):
            if item < 0:
                continue
            w, h = x2 - x1, y2 - y1
            for _copy in range(rng.choice([0, 1, 1, 1, 2])):
                jitter = rng.uniform(-0.15, 0.15, 4) * [w, h, w, h]
                rows.append([item, label, rng.uniform(0.05, 1.0), *(np.array([x1, y1, x2, y2]) + jitter)])
        for _ in range(4):
            x, y = rng.uniform(0, 0.8, 2)
            rows.append([0, rng.integers(1, 21), rng.uniform(0.01, 0.8), x, y, x + rng.uniform(0.05, 0.2),
                         y + rng.uniform(0.05, 0.2)])
        rows = np.array(rows, np.float32)
        top[0].reshape(1, 1, len(rows), 7)
        top[0].data[...] = rows.reshape(1, 1, -1, 7)

    def backward(self, top, propagate_down, bottom):
        pass
