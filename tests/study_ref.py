"""Test-side stand-ins for the study's networks: written from a reading of its architecture, with the same submodule
names (hence the same `state_dict` keys) and the same forward computation, so that `import_study` can be checked
against the study's own logits without importing the study's code.

ENet and the shallow CNN are re-implemented; SAMed / samed_fast / SAM2-UNet put the study's wrapper layout (its LoRA
module names, its adapter and decoder names) on the `segment_anything` and `sam2` packages' modules."""
import torch
import torch.nn.functional as F
from torch import nn


def cbp(ci, co, **conv):
    "Conv2d, BatchNorm2d, PReLU as indices 0, 1, 2"
    return nn.Sequential(nn.Conv2d(ci, co, **conv), nn.BatchNorm2d(co), nn.PReLU())


# ENet: names conv0, maxpool0, bottleneck{1_0,1_1,2_0,2_1,3,4,5}, final; blocks block0..2, do, PReLU / PReLU_out, conv_out
class RefBottleNeck(nn.Module):
    def __init__(self, ci, co, f, *, p=0.01, dilation=1, asym=False, dilate_last=False):
        super().__init__()
        mid = ci // f
        self.block0 = cbp(ci, mid, kernel_size=1)
        if asym: self.block1 = nn.Sequential(nn.Conv2d(mid, mid, (5, 1), padding=(2, 0)), nn.Conv2d(mid, mid, (1, 5), padding=(0, 2)),
                                             nn.BatchNorm2d(mid), nn.PReLU())
        else: self.block1 = cbp(mid, mid, kernel_size=3, padding=dilation, dilation=dilation)
        self.block2 = cbp(mid, co, kernel_size=1)
        self.do, self.PReLU_out = nn.Dropout(p), nn.PReLU()
        self.conv_out = (cbp(ci, co, kernel_size=1) if ci > co else cbp(ci, co, kernel_size=3, padding=1) if dilate_last
                         else nn.Identity())

    def forward(self, x): return self.PReLU_out(self.conv_out(x) + self.do(self.block2(self.block1(self.block0(x)))))


class RefDown(nn.Module):
    def __init__(self, ci, co, f):
        super().__init__()
        mid = ci // f
        self.maxpool0 = nn.MaxPool2d(2, return_indices=True)
        self.block0, self.block1 = cbp(ci, mid, kernel_size=2, stride=2), cbp(mid, mid, kernel_size=3, padding=1)
        self.block2, self.do, self.PReLU = cbp(mid, co, kernel_size=1), nn.Dropout(0.01), nn.PReLU()

    def forward(self, x):
        pooled, idx = self.maxpool0(x)
        out = self.do(self.block2(self.block1(self.block0(x))))
        out = torch.cat([out[:, :pooled.shape[1]] + pooled, out[:, pooled.shape[1]:]], 1)
        return self.PReLU(out), idx


class RefUp(nn.Module):
    def __init__(self, ci, co, f):
        super().__init__()
        mid = ci // f
        self.unpool = nn.MaxUnpool2d(2)
        self.block0, self.block1 = cbp(ci, mid, kernel_size=3, padding=1), cbp(mid, mid, kernel_size=3, padding=1)
        self.block2, self.do, self.PReLU = cbp(mid, co, kernel_size=1), nn.Dropout(0.01), nn.PReLU()

    def forward(self, args):
        x, idx, skip = args
        up = self.unpool(x, idx)
        return self.PReLU(up + self.do(self.block2(self.block1(self.block0(torch.cat([up, skip], 1))))))


def ref_stage(c, last=None, f=4):
    "The study's 8 dilated/asymmetric bottlenecks (the last maps c to `last`)"
    kw = [dict(p=.1), dict(dilation=2), dict(p=.1, asym=True), dict(dilation=4), dict(p=.1), dict(dilation=8),
          dict(p=.1, asym=True), dict(dilation=16)]
    if last: kw[-1]['dilate_last'] = True
    return nn.Sequential(*[RefBottleNeck(c, (last or c) if i == 7 else c, f, **k) for i, k in enumerate(kw)])


class RefENet(nn.Module):
    def __init__(self, cin=1, cout=5, K=16, f=4):
        super().__init__()
        self.conv0, self.maxpool0 = nn.Conv2d(cin, K - 1, 3, stride=2, padding=1), nn.MaxPool2d(2)
        self.bottleneck1_0 = RefDown(K, 4*K, f)
        self.bottleneck1_1 = nn.Sequential(*[RefBottleNeck(4*K, 4*K, f) for _ in range(4)])
        self.bottleneck2_0 = RefDown(4*K, 8*K, f)
        self.bottleneck2_1, self.bottleneck3 = ref_stage(8*K), ref_stage(8*K, 4*K)
        self.bottleneck4 = nn.Sequential(RefUp(8*K, 4*K, f), RefBottleNeck(4*K, 4*K, f, p=.1), RefBottleNeck(4*K, K, f, p=.1))
        self.bottleneck5 = nn.Sequential(RefUp(2*K, K, f), RefBottleNeck(K, K, f, p=.1))
        self.final = nn.Sequential(cbp(K, K, kernel_size=3, padding=1, bias=False), cbp(K, K, kernel_size=3, padding=1, bias=False),
                                   nn.Conv2d(K, cout, 1))

    def forward(self, x):
        x0 = torch.cat([self.conv0(x), self.maxpool0(x)], 1)
        x1, i1 = self.bottleneck1_0(x0); x1 = self.bottleneck1_1(x1)
        x2, i2 = self.bottleneck2_0(x1)
        x3 = self.bottleneck3(self.bottleneck2_1(x2))
        x5 = self.bottleneck5((self.bottleneck4((x3, i2, x1)), i1, x0))
        return self.final(F.interpolate(x5, scale_factor=2, mode='nearest'))


class RefShallowCNN(nn.Module):
    "conv0, conv1, conv2: three 3×3 conv (no bias), BN, PReLU; the last one gives the K outputs"
    def __init__(self, cin=1, cout=2, nG=4):
        super().__init__()
        kw = dict(kernel_size=3, padding=1, bias=False)
        self.conv0, self.conv1, self.conv2 = cbp(cin, 4*nG, **kw), cbp(4*nG, 4*nG, **kw), cbp(4*nG, cout, **kw)

    def forward(self, x): return self.conv2(self.conv1(self.conv0(x)))


def randomize_(model, seed=0):
    "Seeded random values for every parameter and statistic, fan-in scaled (no mapping error hides behind an init)"
    g = torch.Generator().manual_seed(seed)
    u = lambda shape: torch.rand(shape, generator=g) * 2 - 1
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point(): continue
            if t.ndim > 1: t.copy_(u(t.shape) * (2 / (t[0].numel() if t.shape[0] > 1 else t.shape[-1]))**.5)
            elif name.endswith(('running_var', 'weight', 'theta')) or t.ndim == 0: t.copy_(1 + .3 * u(t.shape))
            else: t.copy_(.2 * u(t.shape))
    return model


# The study's crfseg CRF: parameters smoothness_weight (scalar) and inv_smoothness_theta (one per spatial axis)
class RefCRF(nn.Module):
    def __init__(self, n_iter=5, filter_size=11):
        super().__init__()
        self.n_iter, self.filter_size = n_iter, filter_size
        self.smoothness_weight = nn.Parameter(torch.tensor(1.))
        self.inv_smoothness_theta = nn.Parameter(torch.ones(2))

    def kernel(self):
        "The 2-D message kernel: outer product of the two 1-D Gaussians, each with its centre tap zeroed"
        d = torch.arange(self.filter_size) - self.filter_size // 2
        g = [torch.exp(-(d * t)**2 / 2) * (d != 0) for t in self.inv_smoothness_theta]
        return g[0][:, None] * g[1][None, :]

    def forward(self, x):
        unary, k, K = x, self.kernel(), x.shape[1]
        for _ in range(self.n_iter):
            msg = F.conv2d(x.softmax(1), k.expand(K, 1, *k.shape), padding=self.filter_size // 2, groups=K)
            x = unary - (-(self.smoothness_weight * msg))   # compatibility −[l = l′] turns the message's sign
        return x


class RefCRFAugmented(nn.Module):
    "The study's CRFAugmented: `net` (a LoRA SAM) and `crf` on its 'masks'"
    def __init__(self, net):
        super().__init__()
        self.net, self.crf = net, RefCRF()

    def forward(self, x): return {'masks': self.crf(self.net(x)['masks'])}


# SAMed / samed_fast: the study's LoRA_Sam layout on segment_anything's modules (tiny sizes)
from functools import partial
from segment_anything.modeling import ImageEncoderViT, PromptEncoder, MaskDecoder, TwoWayTransformer, Sam
from sam2.modeling.backbones.hieradet import Hiera


def ref_sam(K=5, canvas=512, d=32):
    "A tiny SAM assembled as the study's build does it: K multimask outputs, pixel mean 0.0457 and std 1"
    enc = ImageEncoderViT(img_size=canvas, patch_size=16, embed_dim=d, depth=2, num_heads=2, mlp_ratio=4, out_chans=d,
                          qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=4,
                          global_attn_indexes=(1,))
    prompt = PromptEncoder(embed_dim=d, image_embedding_size=(canvas // 16,) * 2, input_image_size=(canvas,) * 2, mask_in_chans=4)
    dec = MaskDecoder(num_multimask_outputs=K, transformer=TwoWayTransformer(depth=2, embedding_dim=d, mlp_dim=64, num_heads=2),
                      transformer_dim=d, iou_head_depth=3, iou_head_hidden_dim=d)
    return Sam(enc, prompt, dec, pixel_mean=[0.0457] * 3, pixel_std=[1.] * 3)


class RefLoRAqkv(nn.Module):
    "The study's _LoRA_qkv: the fused layer as `qkv`, low-rank q and v updates as linear_{a,b}_{q,v}"
    def __init__(self, qkv, r):
        super().__init__()
        d = qkv.in_features
        self.qkv = qkv
        self.linear_a_q, self.linear_b_q = nn.Linear(d, r, bias=False), nn.Linear(r, d, bias=False)
        self.linear_a_v, self.linear_b_v = nn.Linear(d, r, bias=False), nn.Linear(r, d, bias=False)

    def forward(self, x):
        out, d = self.qkv(x), self.qkv.in_features
        q = out[..., :d] + self.linear_b_q(self.linear_a_q(x))
        v = out[..., -d:] + self.linear_b_v(self.linear_a_v(x))
        return torch.cat([q, out[..., d:-d], v], -1)


class RefLoRAProj(nn.Module):
    "samed_fast's _LoRA_qkv_proj: `proj` plus w_b(w_a(x))"
    def __init__(self, proj, r):
        super().__init__()
        self.proj, self.w_a, self.w_b = proj, nn.Linear(proj.in_features, r, bias=False), nn.Linear(r, proj.out_features, bias=False)

    def forward(self, x): return self.proj(x) + self.w_b(self.w_a(x))


class RefLoRASam(nn.Module):
    "The study's LoRA_Sam (fast: samed_fast's, with decoder LoRA and the fa_ti_* second names) and its Sam.forward"
    def __init__(self, sam, r=6, fast=False):
        super().__init__()
        for blk in sam.image_encoder.blocks: blk.attn.qkv = RefLoRAqkv(blk.attn.qkv, r)
        if fast:
            tr = sam.mask_decoder.transformer
            for att in [a for l in tr.layers for a in (l.self_attn, l.cross_attn_token_to_image, l.cross_attn_image_to_token)] + [tr.final_attn_token_to_image]:
                att.q_proj, att.v_proj = RefLoRAProj(att.q_proj, r), RefLoRAProj(att.v_proj, r)
            f = tr.final_attn_token_to_image
            self.fa_ti_q_proj_A, self.fa_ti_q_proj_B, self.fa_ti_v_proj_A, self.fa_ti_v_proj_B = f.q_proj.w_a, f.q_proj.w_b, f.v_proj.w_a, f.v_proj.w_b
        self.sam = sam

    def forward(self, x):
        s, n = self.sam, self.sam.image_encoder.img_size
        x = (x - s.pixel_mean) / s.pixel_std                          # grey (B, 1) broadcast to 3 channels
        x = F.pad(x, (0, n - x.shape[-1], 0, n - x.shape[-2]))
        sparse, dense = s.prompt_encoder(points=None, boxes=None, masks=None)
        low, _ = s.mask_decoder(image_embeddings=s.image_encoder(x), image_pe=s.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True)
        masks = F.interpolate(low, (n, n), mode='bilinear', align_corners=False)[..., :256, :256]
        return {'masks': F.interpolate(masks, (256, 256), mode='bilinear', align_corners=False), 'low_res_logits': low}


# SAM2-UNet: the study's module names on sam2's Hiera (tiny trunk)
TINY_HIERA = dict(embed_dim=8, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,), window_pos_embed_bkg_spatial_size=(4, 4),
                  window_spec=(4, 4, 4, 2))


class RefAdapter(nn.Module):
    def __init__(self, block):
        super().__init__()
        d = block.attn.qkv.in_features
        self.block, self.prompt_learn = block, nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d), nn.GELU())

    def forward(self, x): return self.block(x + self.prompt_learn(x))


class RefBasicConv(nn.Module):
    "conv (no bias) and bn; the study's forward never applies its relu"
    def __init__(self, ci, co, k, padding=0, dilation=1):
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(ci, co, k, padding=padding, dilation=dilation, bias=False), nn.BatchNorm2d(co), nn.ReLU()

    def forward(self, x): return self.bn(self.conv(x))


class RefRFB(nn.Module):
    def __init__(self, ci, co=64):
        super().__init__()
        self.relu = nn.ReLU()
        self.branch0 = nn.Sequential(RefBasicConv(ci, co, 1))
        for b, k in enumerate((3, 5, 7), 1):
            setattr(self, f'branch{b}', nn.Sequential(RefBasicConv(ci, co, 1), RefBasicConv(co, co, (1, k), padding=(0, k // 2)),
                                                      RefBasicConv(co, co, (k, 1), padding=(k // 2, 0)), RefBasicConv(co, co, 3, padding=k, dilation=k)))
        self.conv_cat, self.conv_res = RefBasicConv(4 * co, co, 3, padding=1), RefBasicConv(ci, co, 1)

    def forward(self, x):
        cat = torch.cat([getattr(self, f'branch{b}')(x) for b in range(4)], 1)
        return self.relu(self.conv_cat(cat) + self.conv_res(x))


class RefDoubleConv(nn.Module):
    def __init__(self, ci, co, mid):
        super().__init__()
        self.double_conv = nn.Sequential(nn.Conv2d(ci, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                         nn.Conv2d(mid, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU())

    def forward(self, x): return self.double_conv(x)


class RefUpS(nn.Module):
    def __init__(self, ci, co):
        super().__init__()
        self.up, self.conv = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True), RefDoubleConv(ci, co, ci // 2)

    def forward(self, x, skip):
        x = self.up(x)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], 1))


class RefSAM2UNet(nn.Module):
    "The study's SAM2UNet: `encoder` (Hiera, blocks wrapped), rfb1..4, up1..up4 (up4 unused), side1, side2, head"
    def __init__(self, trunk=None, K=5):
        super().__init__()
        self.encoder = trunk or Hiera(**TINY_HIERA)
        dims = [self.encoder.blocks[i].dim_out for i in self.encoder.stage_ends]
        self.encoder.blocks = nn.Sequential(*[RefAdapter(b) for b in self.encoder.blocks])
        for i, d in enumerate(dims, 1): setattr(self, f'rfb{i}', RefRFB(d))
        for i in range(1, 5): setattr(self, f'up{i}', RefUpS(128, 64))
        self.side1, self.side2, self.head = nn.Conv2d(64, K, 1), nn.Conv2d(64, K, 1), nn.Conv2d(64, K, 1)

    def forward(self, x):
        if x.shape[1] == 1: x = x.repeat(1, 3, 1, 1)
        f1, f2, f3, f4 = [getattr(self, f'rfb{i}')(f) for i, f in enumerate(self.encoder(x), 1)]
        x = self.up1(f4, f3); out1 = F.interpolate(self.side1(x), scale_factor=16, mode='bilinear')
        x = self.up2(x, f2); out2 = F.interpolate(self.side2(x), scale_factor=8, mode='bilinear')
        x = self.up3(x, f1)
        return F.interpolate(self.head(x), scale_factor=4, mode='bilinear'), out1, out2
