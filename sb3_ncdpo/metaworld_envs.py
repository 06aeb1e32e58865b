"""
Meta-World's manipulation tasks (``metaworld`` 3.1.1, state observations) as the gymnasium ids of
:mod:`sb3_ncdpo.registration`, so that rl-zoo3 (``sb3-ncdpo train``), ``compare``, ``collect-demos`` and the
fine-tuning commands name them like any env.

An id builds the task with Meta-World's own constructor (``metaworld.make_mt_envs``: its MT1 benchmark of one task,
whose 50 training variations, e.g. object and goal positions, are fixed by ``task_seed``; each reset draws one of them
with the env's seeded generator) and adds what SB3 reads: ``info["is_success"]``, whether the episode has succeeded
at some step so far (Meta-World's evaluation counts an episode a success if it ever succeeds: it ends episodes at
their first success), so that ``EvalCallback``, SB3's ``rollout/success_rate`` and ``compare`` report a success rate
on Meta-World's terms; and, for the ``-sparse`` ids, a reward of 1 on
the steps where the task is solved and 0 elsewhere (DPPO's Robomimic setting) in place of Meta-World's dense one.
Episodes last Meta-World's 500 steps (its ``max_path_length``, the most it allows), unless ``max_episode_steps`` of
``gymnasium.make`` caps them earlier; they do not end at a success unless ``terminate_on_success=True``.

``pixels=True`` (a ``gymnasium.make`` argument) makes the observation a rendered camera image instead of the state:
channel-first ``uint8`` (SB3's image convention, so ``CnnPolicy`` / ``CnnDiffusionPolicy`` take it without a
transpose wrapper), rendered offscreen by MuJoCo (set ``MUJOCO_GL=egl`` or ``osmesa`` on a machine without a display;
on this project's CPU machines EGL through Mesa renders ~4 frames/s at 84x84, a GPU machine is needed at scale).
"""

from typing import Any

import gymnasium as gym
import numpy as np


class MetaWorldTask(gym.Wrapper):
    """
    SB3's success key (``is_success``: whether the episode has succeeded at some step so far, so that at its end it
    says what Meta-World's evaluation counts), the sparse reward, gymnasium's seeding (``reset(seed=s)``: the same
    variation of the task and the same start for the same ``s``) and the observation space of the task's full
    observations (Meta-World keeps the bounds it had before its first task showed the goal, so the goal would lie
    outside them).

    :param env: A Meta-World env from ``metaworld.make_mt_envs``
    :param sparse: Reward 1 on a success step and 0 elsewhere, instead of Meta-World's dense reward
    """

    def __init__(self, env: gym.Env, sparse: bool) -> None:
        super().__init__(env)
        self.sparse = sparse
        self.succeeded = False
        self.unwrapped.set_task(env.get_wrapper_attr("tasks")[0])  # type: ignore[attr-defined]
        self.observation_space = self.unwrapped.sawyer_observation_space  # type: ignore[attr-defined]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:  # Meta-World ignores reset's seed (its seed() seeds) and draws the variation before it
            self.unwrapped.seed(seed)  # type: ignore[attr-defined]
        self.succeeded = False
        return self.env.reset(options=options)

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.succeeded = self.succeeded or bool(info["success"])
        info["is_success"] = self.succeeded
        return observation, float(info["success"]) if self.sparse else float(reward), terminated, truncated, info


class MetaWorldPixels(gym.ObservationWrapper):
    """
    The camera image as the observation, channel-first: ``Box(0, 255, (3, size, size), uint8)``.

    :param env: A Meta-World task made with ``render_mode="rgb_array"`` and ``width = height = size``
    :param size: Image height and width in pixels
    """

    def __init__(self, env: gym.Env, size: int) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 255, (3, size, size), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(self.env.render()).transpose(2, 0, 1))


def make_task(
    task: str,
    sparse: bool = False,
    task_seed: int = 0,
    terminate_on_success: bool = False,
    render_mode: str | None = None,
    pixels: bool = False,
    image_size: int = 84,
    camera_name: str | None = None,
    **kwargs: Any,
) -> gym.Env:
    """
    The entry point of the Meta-World ids.

    :param task: Meta-World's task name (``"push-v3"``, ... ``metaworld.ALL_V3_ENVIRONMENTS``)
    :param sparse: Reward 1 on a success step and 0 elsewhere
    :param task_seed: Seed of the task's 50 variations (Meta-World's ``MT1(task, seed)``): the same for the training
        and the evaluation envs, so that both draw from the same variations
    :param terminate_on_success: End an episode at its first success step
    :param render_mode: Gymnasium's render mode (``"rgb_array"`` renders offscreen); with ``pixels`` it is
        ``"rgb_array"``
    :param pixels: Observe the camera image (channel-first ``uint8``) instead of the state
    :param image_size: Height and width of the image, with ``pixels``
    :param camera_name: Meta-World's camera (``"corner"``, ``"corner2"``, ``"corner3"``, ``"topview"``,
        ``"behindGripper"``, ``"gripperPOV"``); ``None``: ``"corner2"`` with ``pixels``, else Meta-World's default
    :param kwargs: Other keyword arguments of ``metaworld.make_mt_envs`` (e.g. ``width`` and ``height`` of
        ``render()``'s frames without ``pixels``)
    :return: The env
    """
    import metaworld

    if task not in metaworld.ALL_V3_ENVIRONMENTS:
        raise ValueError(f"task must be one of Meta-World's {sorted(metaworld.ALL_V3_ENVIRONMENTS)}, got {task!r}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8 (pixels), got {image_size!r}")
    if pixels and render_mode not in (None, "rgb_array"):
        raise ValueError(f"pixels=True renders offscreen: render_mode must be None or 'rgb_array', got {render_mode!r}")
    if pixels:
        kwargs.update(render_mode="rgb_array", camera_name=camera_name or "corner2", width=image_size, height=image_size)
    else:
        kwargs.update(render_mode=render_mode, **({"camera_name": camera_name} if camera_name else {}))
    env = metaworld.make_mt_envs(task, seed=task_seed, terminate_on_success=terminate_on_success, **kwargs)
    assert isinstance(env, gym.Env)  # one task: a single env, not a vector of them
    wrapped = MetaWorldTask(env, sparse)
    return MetaWorldPixels(wrapped, image_size) if pixels else wrapped
