// Native depthwise convolution (CPU): types "ConvolutionDepthwise" and
// "DepthwiseConvolution".
// Written for mtcnn-caffe; added to the brocolli-caffe sources by
// scripts/caffe_build/patches/apply_patches.py.
#ifndef CAFFE_DEPTHWISE_CONV_LAYER_HPP_
#define CAFFE_DEPTHWISE_CONV_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

// Depthwise 2-D convolution: output channel c is input channel c convolved
// with its own kh x kw filter (MobileNet's "dw" layers). It takes the
// ordinary convolution_param -- kernel, stride, pad and dilation (one value,
// one per axis, or the _h/_w fields), bias_term, weight_filler, bias_filler --
// with num_output equal to the input channel count and group equal to it or
// absent. Its blobs have the shapes of Convolution with group = channels
// (weights C x 1 x kh x kw, bias C), so a caffemodel works with either layer
// type unchanged, and it computes the same values.
//
// Each output row is a sum of kh * kw scaled input rows (no im2col, no
// GEMM); the inner loops run over contiguous output columns, which the
// compiler vectorises. The (image, channel) planes are shared out over as
// many threads as the BLAS Caffe links (OpenBLAS) was given, when there is
// enough work to share.
template <typename Dtype>
class ConvolutionDepthwiseLayer : public Layer<Dtype> {
 public:
  explicit ConvolutionDepthwiseLayer(const LayerParameter& param)
      : Layer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  // The type the prototxt named (the layer is registered under two names).
  virtual inline const char* type() const {
    return this->layer_param_.type().c_str();
  }
  virtual inline int MinBottomBlobs() const { return 1; }
  virtual inline int MinTopBlobs() const { return 1; }
  virtual inline bool EqualNumBottomTopBlobs() const { return true; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down,
      const vector<Blob<Dtype>*>& bottom);

 private:
  // Where kernel column kw reads its input: output column ow reads input
  // column ow * stride_w + offset, valid for ow in [begin, end).
  struct ColumnSpan {
    int offset;
    int begin;
    int end;
  };

  // Input row read by output row oh through kernel row kh (may lie outside
  // [0, height_), i.e. in the padding).
  inline int InputRow(int oh, int kh) const {
    return oh * stride_h_ - pad_h_ + kh * dilation_h_;
  }
  // Calls fn(oh, ih, tap, span) for every output row oh and kernel tap
  // (kh, kw), tap = kh * kernel_w_ + kw, whose input row ih lies in the image.
  template <typename Fn>
  void ForEachTap(const Fn& fn) const;
  void ForwardPlane(const Dtype* input, const Dtype* weight, Dtype bias,
      Dtype* output) const;
  void BackwardDataPlane(const Dtype* top_diff, const Dtype* weight,
      Dtype* bottom_diff) const;
  // Adds this plane's share to the kernel's gradient (weight_diff) and, if
  // not null, to the bias gradient; `scratch` holds (kh * kw + 1) * out_w_.
  void BackwardParamPlane(const Dtype* top_diff, const Dtype* input,
      Dtype* weight_diff, Dtype* bias_diff, Dtype* scratch) const;

  int channels_;
  int height_, width_;
  int out_h_, out_w_;
  int kernel_h_, kernel_w_;
  int stride_h_, stride_w_;
  int pad_h_, pad_w_;
  int dilation_h_, dilation_w_;
  bool bias_term_;
  vector<ColumnSpan> spans_;  // one per kernel column, set by Reshape
};

}  // namespace caffe

#endif  // CAFFE_DEPTHWISE_CONV_LAYER_HPP_
