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
