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
